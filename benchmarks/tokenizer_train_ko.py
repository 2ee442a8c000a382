"""Tokenizer retraining on Korean: tokens per character before and after, at two vocabulary sizes.

Converts ../shared/data/ko_alpaca_1040.json (ko-alpaca template), then runs `dataprep tokenizer-train`
(base smollm2-135m, 10% held out, seed 0) at each vocabulary size and prints held-out tokens per
character of the base and of the retrained tokenizer.

Run from the repository root:  python benchmarks/tokenizer_train_ko.py [--vocab-sizes 4000,16000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "ko_alpaca_1040.json"


def main() -> None:
    from dataprep.convert.stage import convert
    from dataprep.tokenizer_train import tokenizer_train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab-sizes", default="4000,16000")
    ap.add_argument("--held-out", type=float, default=0.1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        records = Path(tmp) / "ko"
        convert(str(DATA), str(records), template="ko-alpaca")
        print("| vocab size (requested / actual) | train rows | held-out rows (chars) | tokens/char before "
              "(smollm2-135m, 49,152) | after | after / before | seconds |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for size in (int(v) for v in args.vocab_sizes.split(",")):
            start = time.perf_counter()
            m = tokenizer_train(records, Path(tmp) / f"tok{size}", vocab_size=size, held_out=args.held_out, seed=0,
                                progress=False)
            secs = time.perf_counter() - start
            tpc, rows, vocab = m.get("tokens_per_char"), m.get("rows"), m.get("vocab_size")
            print(f"| {size:,} / {vocab['new']:,} | {rows['train']:,} | {rows['held_out']:,} ({m.get('held_out_chars'):,})"
                  f" | {tpc['before']:.4f} | {tpc['after']:.4f} | {tpc['ratio']:.3f} | {secs:.1f} |")


if __name__ == "__main__":
    main()
