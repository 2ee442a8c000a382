"""Filter speed: rows/s of each filter family over ROWS rows replicated from the shared alpaca
files (Korean, English, Chinese SFT rows, in turn), one family at a time, on all rows.

    PYTHONPATH=. python benchmarks/bench_filter.py [--rows 1000000] [--lang-rows 100000]

The language family is timed on --lang-rows rows (the identifier reads every text: at ~10k
texts/s a million rows takes minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import polars as pl

from dataprep.filter.config import FilterConfig
from dataprep.filter.stage import run_family

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def frame(n: int) -> pl.DataFrame:
    rows = []
    for name in ("ko_alpaca_1040.json", "alpaca_en_demo.json", "alpaca_zh_demo.json"):
        rows += [{k: r.get(k, "") for k in ("instruction", "input", "output")} for r in json.loads((DATA / name).read_text())]
    base = pl.DataFrame(rows)
    reps = -(-n // base.height)
    return pl.concat([base] * reps).head(n)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--lang-rows", type=int, default=100_000)
    args = ap.parse_args()
    big = frame(args.rows)
    cases = [("length", FilterConfig(min_chars=("answer=2",), max_words=("4000",)), args.rows),
             ("language", FilterConfig(lang=("ko", "en", "zh")), args.lang_rows),
             ("pii", FilterConfig(pii="redact"), args.rows),
             ("quality", FilterConfig(quality=True), args.rows)]
    for family, cfg, n in cases:
        sub = big.head(n)
        t = time.perf_counter()
        res = run_family(family, sub, "sft", cfg, ("prompt", "answer"), None)
        dt = time.perf_counter() - t
        removed = sum(r is not None for r in res.reason)
        print(f"{family:9s} {n:>9,d} rows {dt:7.1f} s {n / dt:>10,.0f} rows/s  (removed {removed:,})", flush=True)


if __name__ == "__main__":
    main()
