"""Benchmark: `--engine local` vs `--engine ray` on convert and tokenize, side by side in one run.

Builds (or reuses) an Alpaca-like CSV of --rows rows (alpaca_en_demo.json repeated, as
bench_convert.py), then runs in separate subprocesses, each timed end to end including the Ray
cluster's start and stop:
- convert of the CSV: local; ray (a local cluster with every core);
- tokenize of the first --tokenize-rows records (SmolLM2, max_len 2048): local in one process,
  local with --num-proc 2 (the best-configured local run), ray;
- dedupe of --exact-local-rows records (exact; 10% of the rows are copies of others) and of
  --near-local-rows records (near; fragment texts): local, and ray with the cluster up.
"ray, cluster up" starts the cluster (and runs one tiny map) before its clock starts: what a
command pays on a cluster that is already running (--ray-address), without Ray's start-up.
Peak memory is the peak of the summed PSS (proportional set size: a shared page counts once
overall, split between the processes that map it, so Ray's shared object store is not counted
per worker) of the process and all its descendants (the raylet, GCS and Ray workers included),
sampled every 0.2 s by the benchmark's own process; `driver RSS` is the command's own process.
`load` is the 1-minute load average before → after each row (the machine may be shared). Every
engine's data files must be byte-identical to local's, or the benchmark stops.

    python benchmarks/bench_engine.py [--rows 1000000] [--tokenize-rows 100000 (0: convert only)]
        [--exact-local-rows N] [--near-local-rows N] [--near-rows N] (each 0 by default: no dedupe rows;
        e.g. --exact-local-rows 200000 --near-local-rows 200000) [--no-cold] [--json engine.json]
        [--data DIR (the real texts the inputs are built from; default ../shared/data)]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
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
up_s = None
if options.pop("cluster_up", False):  # the cluster started (and warmed by a tiny map) before the clock starts
    from dataprep.engine import cluster, ray_map
    t = time.perf_counter()
    up = cluster()  # held: a dropped generator context would stop the cluster at once
    up.__enter__()
    list(ray_map(len, lambda: iter([[1], [2], [3]])))
    up_s = time.perf_counter() - t
t = time.perf_counter()
if stage == "convert":
    from dataprep.convert import convert
    m = convert([src], out, force=True, **options)
elif stage == "dedupe":
    from dataprep.dedupe import dedupe
    m = dedupe(src, out, force=True, **options)
else:
    from dataprep.tokenize import tokenize
    m = tokenize(src, out, force=True, progress=False, **options)
print(json.dumps({"seconds": time.perf_counter() - t, "rows": m.counts.n_in, "cluster_up_s": up_s}))
"""


MEMORY_EVERY = 0.2  # seconds between samples of the process tree's PSS (--memory-every; 0: none)


def run(stage: str, src: Path, out: Path, **options) -> dict:
    """Runs one stage in a subprocess; this process samples its memory meanwhile (sampling in the
    measured process would take its GIL and slow it). PSS reads every process's smaps, which takes
    each one's memory-map lock: with many workers that may slow them, so MEMORY_EVERY = 0 times
    the stage alone (no memory figures)."""
    import psutil

    load_before = os.getloadavg()[0]  # the 1-minute load average: the machine may be shared
    proc = subprocess.Popen([sys.executable, "-c", RUN, stage, str(src), str(out), json.dumps(options)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child, peak, driver = psutil.Process(proc.pid), 0, 0
    while MEMORY_EVERY and proc.poll() is None:
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
        time.sleep(MEMORY_EVERY)
    stdout, stderr = proc.communicate()
    if proc.returncode:
        sys.exit(stderr[-3000:])
    return {**json.loads(stdout.strip().splitlines()[-1]), "peak_gb": peak / 1024**3, "driver_gb": driver / 1024**3,
            "load_before": load_before, "load_after": os.getloadavg()[0]}


def digest(out: Path, names: tuple[str, ...] | None = None) -> dict[str, str]:
    """sha256 of every data file of an output (not the manifest, which holds timings), or of `names`."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())
            if p.is_file() and p.name != "manifest.json" and (names is None or p.name in names)}


def table(title: str, results: dict[str, dict], base: str) -> None:
    print(f"\n{title}")
    print(f"{'':20} {'seconds':>8} {'rows/s':>9} {'peak PSS GB':>12} {'driver RSS GB':>14} {'time / ' + base:>13} "
          f"{'PSS / ' + base:>12} {'load':>10}")
    for name, r in results.items():
        b = results[base]
        print(f"{name:20} {r['seconds']:8.2f} {r['rows'] / r['seconds']:9,.0f} {r['peak_gb']:12.2f} {r['driver_gb']:14.2f} "
              f"{r['seconds'] / b['seconds']:13.2f} {r['peak_gb'] / b['peak_gb'] if b['peak_gb'] else float('nan'):12.2f} "
              f"{r['load_before']:4.1f}→{r['load_after']:<4.1f}", flush=True)


def near_records(rows: int) -> Path:
    """Records of `rows` distinct short texts (bench_dedupe.fragment_texts: 85% random triples of real text
    pieces, 15% edited copies of them, so near dedupe has pairs to find), converted once and kept."""
    import polars as pl

    from benchmarks.bench_dedupe import fragment_texts
    from dataprep.convert import convert

    out = OUT / f"near_records_{rows}"
    if not (out / "manifest.json").is_file():
        OUT.mkdir(parents=True, exist_ok=True)
        src = OUT / f"near_texts_{rows}.parquet"  # bench_dedupe_gpus.py --save-texts writes the same texts
        if not src.is_file():
            pl.DataFrame({"text": fragment_texts(rows)[0]}).write_parquet(src)
        convert([str(src)], str(out), kind="text", force=True)
    return out


def exact_records(rows: int) -> Path:
    """`rows` records for exact dedupe: 90% distinct fragment texts, then 10% copies of random ones (half of
    them upper-cased: equal once normalised), shuffled; converted once and kept."""
    import random

    import polars as pl

    from benchmarks.bench_dedupe import fragment_texts
    from dataprep.convert import convert

    out = OUT / f"exact_records_{rows}"
    if not (out / "manifest.json").is_file():
        OUT.mkdir(parents=True, exist_ok=True)
        texts = fragment_texts(rows - rows // 10)[0]
        r = random.Random(0)
        texts += [t.upper() if r.random() < 0.5 else t for t in r.choices(texts, k=rows // 10)]
        r.shuffle(texts)
        src = OUT / f"exact_texts_{rows}.parquet"
        pl.DataFrame({"text": texts}).write_parquet(src)
        convert([str(src)], str(out), kind="text", force=True)
    return out


def use_data(folder: Path) -> None:
    """Build the inputs from the texts in `folder` (laid out as ../shared/data) instead of ../shared/data."""
    import benchmarks.bench_convert as bench_convert
    import benchmarks.bench_dedupe as bench_dedupe

    if not (folder / "alpaca_en_demo.json").is_file():
        sys.exit(f"--data {folder}: no alpaca_en_demo.json there (expected the layout of ../shared/data)")
    bench_convert.DATA = folder / "alpaca_en_demo.json"
    bench_dedupe.DATA = folder


DEDUPE_FILES = ("records.parquet", "removed.parquet", "pairs.parquet")  # report.json holds timings


def main() -> None:
    global MEMORY_EVERY
    from benchmarks.bench_convert import build_csv

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="convert rows (0: no convert)")
    ap.add_argument("--tokenize-rows", type=int, default=100_000, help="0: no tokenize")
    ap.add_argument("--num-proc", type=int, default=2, help="the best-configured local tokenize: this many processes")
    ap.add_argument("--tokenizer", default=None, help="tokenize's --tokenizer (default: the stage's, smollm2-135m)")
    ap.add_argument("--exact-local-rows", type=int, default=0,
                    help="exact dedupe local and on Ray of this many rows, outputs compared (0: none)")
    ap.add_argument("--near-rows", type=int, default=0, help="near dedupe on Ray of this many rows (0: none)")
    ap.add_argument("--near-local-rows", type=int, default=0,
                    help="near dedupe local and on Ray of this many rows, outputs compared (0: none)")
    ap.add_argument("--no-cold", action="store_true",
                    help="skip the rows that start their own cluster (the 'cluster up' rows report its start-up)")
    ap.add_argument("--json", default=None, help="write every finished row here as it comes")
    ap.add_argument("--memory-every", type=float, default=MEMORY_EVERY,
                    help="seconds between PSS samples of the stage's processes (0: no memory sampling)")
    ap.add_argument("--data", default=None,
                    help="the folder of real texts the inputs are built from (default ../shared/data; "
                         "benchmarks/device/ray_run.sh passes its unpacked copy)")
    args = ap.parse_args()
    MEMORY_EVERY = args.memory_every
    if args.data:
        use_data(Path(args.data))
    report: dict = {"args": vars(args), "cores": os.cpu_count()}

    def save() -> None:
        if args.json:  # atomically: a reader (or a run cut short) never sees half a file
            tmp = Path(f"{args.json}.tmp")
            tmp.write_text(json.dumps(report, indent=1))
            os.replace(tmp, args.json)

    def record(section: str, name: str, result: dict) -> dict:
        report.setdefault(section, {})[name] = result
        print(f"  {section} / {name}: {json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()})}",
              flush=True)
        save()
        return result

    def side_by_side(section: str, stage: str, src: Path, runs: dict[str, dict], files=None) -> dict:
        """`stage` on `src` once per entry of `runs` (row name: the stage's options; the first is the
        base), each row recorded as it ends; every output's data files must equal the base's."""
        results, outs = {}, {}
        for i, (name, options) in enumerate(runs.items()):
            outs[name] = OUT / f"engine_{section}_{i}"
            results[name] = record(section, name, run(stage, src, outs[name], **options))
        base = digest(outs[next(iter(outs))], files)
        differ = [name for name in outs if digest(outs[name], files) != base]
        report[section]["identical"] = not differ
        save()
        assert not differ, f"{section}: {', '.join(differ)} differ from {next(iter(outs))}"
        return results

    def on_ray(options: dict) -> dict[str, dict]:
        """The Ray rows: a cold cluster (unless --no-cold), and one already up."""
        cold = {} if args.no_cold else {"ray": {**options, "engine": "ray"}}
        return {**cold, "ray, cluster up": {**options, "engine": "ray", "cluster_up": True}}

    if args.rows:
        csv = build_csv(args.rows)
        print(f"input: {csv} ({csv.stat().st_size / 1e6:.0f} MB, {args.rows:,} rows)", flush=True)
        convert = side_by_side("convert", "convert", csv, {"local": {}, **on_ray({})})
        table(f"convert, {args.rows:,} rows (outputs identical)", convert, "local")

    if args.tokenize_rows:
        records = OUT / "engine_records"
        run("convert", build_csv(max(args.rows, args.tokenize_rows)), records, limit=args.tokenize_rows)
        opts = {"max_len": 2048, "batch_size": 2000, **({"tokenizer": args.tokenizer} if args.tokenizer else {})}
        tok = side_by_side("tokenize", "tokenize", records, {"local": opts, f"local --num-proc {args.num_proc}":
                                                             {**opts, "num_proc": args.num_proc}, **on_ray(opts)})
        table(f"tokenize, {args.tokenize_rows:,} rows (outputs identical)", tok, "local")

    for method, rows, records_of in [("exact", args.exact_local_rows, exact_records),
                                     ("near", args.near_local_rows, near_records)]:
        if rows:
            opts = {"methods": [method]}
            local_and_up = {"local": opts, "ray, cluster up": on_ray(opts)["ray, cluster up"]}
            found = side_by_side(method, "dedupe", records_of(rows), local_and_up, DEDUPE_FILES)
            table(f"{method} dedupe, {rows:,} rows (outputs identical)", found, "local")
    near = {"methods": ["near"]}
    if args.near_rows:
        src = near_records(args.near_rows)
        r = record("near_ray_only", f"ray, cluster up, {args.near_rows:,} rows",
                   run("dedupe", src, OUT / "engine_near_big", engine="ray", cluster_up=True, **near))
        m = json.loads((OUT / "engine_near_big" / "manifest.json").read_text())
        r["removed"] = m["counts"].get("rejected")
        record("near_ray_only", f"ray, cluster up, {args.near_rows:,} rows", r)


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"\nbenchmark wall time {time.perf_counter() - t:.0f}s")
