"""Benchmark: `--engine local` vs `--engine ray` on convert and tokenize, side by side in one run.

Builds (or reuses) an Alpaca-like CSV of --rows rows (alpaca_en_demo.json repeated, as
bench_convert.py), then runs in separate subprocesses, each timed end to end including the Ray
cluster's start and stop:
- convert of the CSV: local; ray (a local cluster with every core);
- tokenize of the first --tokenize-rows records (SmolLM2, max_len 2048): local in one process,
  local with --num-proc 2 (the best-configured local run), ray.
"ray, cluster up" starts the cluster (and runs one tiny map) before its clock starts: what a
command pays on a cluster that is already running (--ray-address), without Ray's start-up.
Peak memory is the peak of the summed PSS (proportional set size: a shared page counts once
overall, split between the processes that map it, so Ray's shared object store is not counted
per worker) of the process and all its descendants (the raylet, GCS and Ray workers included),
sampled every 0.2 s by the benchmark's own process; `driver RSS` is the command's own process. Every engine's data files must be byte-identical to
local's, or the benchmark stops.

    python benchmarks/bench_engine.py [--rows 1000000] [--tokenize-rows 100000 (0: convert only)]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "benchmarks" / "out"

RUN = """
import json, sys, time
stage, src, out, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
if options.pop("cluster_up", False):  # the cluster started (and warmed by a tiny map) before the clock starts
    from dataprep.engine import cluster, ray_map
    up = cluster()  # held: a dropped generator context would stop the cluster at once
    up.__enter__()
    list(ray_map(len, lambda: iter([[1], [2], [3]])))
t = time.perf_counter()
if stage == "convert":
    from dataprep.convert import convert
    m = convert([src], out, force=True, **options)
else:
    from dataprep.tokenize import tokenize
    m = tokenize(src, out, force=True, progress=False, **options)
print(json.dumps({"seconds": time.perf_counter() - t, "rows": m.counts.n_in}))
"""


def run(stage: str, src: Path, out: Path, **options) -> dict:
    """Runs one stage in a subprocess; this process samples its memory meanwhile (sampling in the
    measured process would take its GIL and slow it)."""
    import psutil

    proc = subprocess.Popen([sys.executable, "-c", RUN, stage, str(src), str(out), json.dumps(options)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child, peak, driver = psutil.Process(proc.pid), 0, 0
    while proc.poll() is None:
        total = 0
        try:
            tree = [child, *child.children(recursive=True)]
        except psutil.Error:
            tree = []
        for p in tree:
            try:
                total += p.memory_full_info().pss
            except psutil.Error:
                pass
        peak = max(peak, total)
        try:
            driver = max(driver, child.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.2)
    stdout, stderr = proc.communicate()
    if proc.returncode:
        sys.exit(stderr[-3000:])
    return {**json.loads(stdout.strip().splitlines()[-1]), "peak_gb": peak / 1024**3, "driver_gb": driver / 1024**3}


def digest(out: Path) -> dict[str, str]:
    """sha256 of every data file of an output (not the manifest, which holds timings)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())
            if p.is_file() and p.name != "manifest.json"}


def table(title: str, results: dict[str, dict], base: str) -> None:
    print(f"\n{title}")
    print(f"{'':20} {'seconds':>8} {'rows/s':>9} {'peak PSS GB':>12} {'driver RSS GB':>14} {'time / ' + base:>13} "
          f"{'PSS / ' + base:>12}")
    for name, r in results.items():
        b = results[base]
        print(f"{name:20} {r['seconds']:8.2f} {r['rows'] / r['seconds']:9,.0f} {r['peak_gb']:12.2f} {r['driver_gb']:14.2f} "
              f"{r['seconds'] / b['seconds']:13.2f} {r['peak_gb'] / b['peak_gb']:12.2f}")


def main() -> None:
    from benchmarks.bench_convert import build_csv

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--tokenize-rows", type=int, default=100_000, help="0: convert only")
    args = ap.parse_args()
    csv = build_csv(args.rows)
    print(f"input: {csv} ({csv.stat().st_size / 1e6:.0f} MB, {args.rows:,} rows)")

    convert = {"local": run("convert", csv, OUT / "engine_convert_local"),
               "ray": run("convert", csv, OUT / "engine_convert_ray", engine="ray"),
               "ray, cluster up": run("convert", csv, OUT / "engine_convert_ray_up", engine="ray", cluster_up=True)}
    for name in ("engine_convert_ray", "engine_convert_ray_up"):
        assert digest(OUT / "engine_convert_local") == digest(OUT / name), f"convert: {name} differs from local"
    table(f"convert, {args.rows:,} rows (outputs identical)", convert, "local")

    if not args.tokenize_rows:
        return
    records = OUT / "engine_records"
    run("convert", csv, records, limit=args.tokenize_rows)
    opts = {"max_len": 2048, "batch_size": 2000}
    tok = {"local": run("tokenize", records, OUT / "engine_tok_local", **opts),
           "local --num-proc 2": run("tokenize", records, OUT / "engine_tok_local2", num_proc=2, **opts),
           "ray": run("tokenize", records, OUT / "engine_tok_ray", engine="ray", **opts),
           "ray, cluster up": run("tokenize", records, OUT / "engine_tok_ray_up", engine="ray", cluster_up=True, **opts)}
    for name in ("engine_tok_local2", "engine_tok_ray", "engine_tok_ray_up"):
        assert digest(OUT / "engine_tok_local") == digest(OUT / name), f"tokenize: {name} differs from local"
    table(f"tokenize, {args.tokenize_rows:,} rows (outputs identical)", tok, "local")


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"\nbenchmark wall time {time.perf_counter() - t:.0f}s")
