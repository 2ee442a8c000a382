"""Benchmark: `dataprep convert` on a 1,000,000-row Alpaca-like CSV vs plain pandas + a Python loop.

Builds benchmarks/out/alpaca_1m.csv by repeating ../shared/data/alpaca_en_demo.json, then runs
each converter in its own subprocess (so each peak RSS is its own) and prints wall time, rows/s
and peak RSS side by side. Both render the same Alpaca prompts (checked on a sample) and write
Parquet.

    python benchmarks/bench_convert.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data" / "alpaca_en_demo.json"
OUT = REPO / "benchmarks" / "out"

OURS = """
import resource, sys, time
from dataprep.convert import convert
t = time.perf_counter()
m = convert([sys.argv[1]], sys.argv[2], template="alpaca", force=True)
secs = time.perf_counter() - t
print(secs, m.counts.n_out, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

# The obvious hand-written converter: pandas reads, a Python loop formats each row.
BASELINE = """
import resource, sys, time
import pandas as pd
from dataprep.templates import ALPACA_NO_INPUT, ALPACA_WITH_INPUT
t = time.perf_counter()
df = pd.read_csv(sys.argv[1], dtype=str, keep_default_na=False)
rows = []
for i, r in enumerate(df.itertuples(index=False)):
    if not r.instruction.strip() or not r.output.strip():
        continue
    fmt = ALPACA_WITH_INPUT if r.input else ALPACA_NO_INPUT
    rows.append({"instruction": r.instruction, "input": r.input, "output": r.output,
                 "prompt": fmt.format(instruction=r.instruction, input=r.input), "completion": r.output,
                 "source": sys.argv[1], "row": i})
pd.DataFrame(rows).to_parquet(sys.argv[2] + ".parquet", index=False)
secs = time.perf_counter() - t
print(secs, len(rows), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def build_csv(rows: int) -> Path:
    import polars as pl

    path = OUT / f"alpaca_{rows}.csv"
    if path.is_file():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    base = pl.DataFrame(json.loads(DATA.read_text()))
    reps = -(-rows // base.height)
    pl.concat([base] * reps).head(rows).write_csv(path)
    return path


def run(code: str, csv: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, str(csv), str(out)], cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr)
    secs, n, rss_kb = proc.stdout.split()[-3:]
    return {"seconds": float(secs), "rows": int(n), "peak_rss_gb": int(rss_kb) / 1024**2}


def check_same_prompts(ours: Path, baseline: Path) -> None:
    import polars as pl

    a = pl.read_parquet(ours / "records.parquet", columns=["prompt", "completion"], n_rows=2000)
    b = pl.read_parquet(f"{baseline}.parquet", columns=["prompt", "completion"], n_rows=2000)
    assert a.equals(b), "ours and the baseline render different prompts"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    t = time.perf_counter()
    csv = build_csv(args.rows)
    print(f"input: {csv} ({csv.stat().st_size / 1e6:.0f} MB, {args.rows:,} rows; built/reused in {time.perf_counter() - t:.1f}s)")
    results = {
        "dataprep convert": run(OURS, csv, OUT / "ours"),
        "pandas + Python loop": run(BASELINE, csv, OUT / "baseline"),
    }
    check_same_prompts(OUT / "ours", OUT / "baseline")
    print(f"{'':22} {'seconds':>8} {'rows/s':>10} {'peak RSS GB':>12}")
    for name, r in results.items():
        print(f"{name:22} {r['seconds']:8.2f} {r['rows'] / r['seconds']:10,.0f} {r['peak_rss_gb']:12.2f}")
    ours, base = results["dataprep convert"], results["pandas + Python loop"]
    print(f"speed-up {base['seconds'] / ours['seconds']:.1f}x, RSS ratio {ours['peak_rss_gb'] / base['peak_rss_gb']:.2f} "
          f"(target: <= 20 s and <= 3 GB for dataprep convert)")


if __name__ == "__main__":
    main()
