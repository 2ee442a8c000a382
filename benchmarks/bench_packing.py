"""Packing efficiency and speed, side by side with trl's `pack_dataset(strategy="bfd")`.

Sequences: alpaca_en_demo.json (x 1 and x 10) rendered with the Alpaca template, tokenized
with SmolLM2 by dataprep (EOS appended), packed into 2048-token bins. Prints bins, the lower
bound ceil(tokens / 2048), efficiency (real tokens / bin capacity) and seconds for:
dataprep `pack` (BFD, min-slack when BFD misses the bound), dataprep BFD alone, and trl.
Then times dataprep's BFD on 1M synthetic lengths (axolotl publishes 2.2 s for 1M samples
on its own machine; that figure is an anchor, not measured here).

Run from the repository root:  python benchmarks/bench_packing.py
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

CAP = 2048


def sequences(copies: int) -> list[list[int]]:
    from bench_tokenize import load_rows

    from dataprep.models import load_tokenizer
    from dataprep.tokenize import Specials, TokenizeOptions, tokenize_batch

    tok = load_tokenizer("smollm2-135m")
    prompts, completions = load_rows(copies)
    n = len(prompts)
    batch = {"prompt": prompts, "completion": completions, "source": ["a"] * n, "row": list(range(n))}
    cols, _, _ = tokenize_batch(batch, tok, "sft", TokenizeOptions(max_len=CAP), Specials(2, 0, "<|endoftext|>", ""))
    return cols["input_ids"]


def report(name: str, n_bins: int, total: int, secs: float) -> None:
    print(f"  {name:38s} bins {n_bins:6d}  efficiency {total / (n_bins * CAP):7.2%}  {secs:7.3f} s")


def compare(seqs: list[list[int]], label: str) -> None:
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    from dataprep.packing import pack, pack_bfd

    lengths = [len(s) for s in seqs]
    total = sum(lengths)
    print(f"{label}: {len(seqs)} sequences, {total:,} tokens, lower bound {-(-total // CAP)} bins of {CAP}")
    t = time.perf_counter()
    bins, algorithm = pack(lengths, CAP)
    report(f"dataprep pack ({algorithm})", len(bins), total, time.perf_counter() - t)
    t = time.perf_counter()
    bfd = pack_bfd(lengths, CAP)
    report("dataprep best-fit-decreasing alone", len(bfd), total, time.perf_counter() - t)
    ds = Dataset.from_dict({"input_ids": seqs})
    t = time.perf_counter()
    packed = pack_dataset(ds, CAP, strategy="bfd")
    report("trl pack_dataset(strategy='bfd')", len(packed), total, time.perf_counter() - t)


def main() -> None:
    from datasets import disable_caching
    from datasets.utils.logging import disable_progress_bar

    from dataprep.packing import pack_bfd

    disable_caching()
    disable_progress_bar()
    seqs = sequences(1)
    compare(seqs, "alpaca_en_demo.json")
    compare(seqs * 10, "alpaca_en_demo.json x 10")
    rng = random.Random(0)
    lengths = [min(CAP, max(8, int(rng.lognormvariate(5.3, 0.8)))) for _ in range(1_000_000)]
    t = time.perf_counter()
    bins = pack_bfd(lengths, CAP)
    secs = time.perf_counter() - t
    print(f"1M synthetic lengths (lognormal, median ~200): dataprep BFD {secs:.2f} s, "
          f"efficiency {sum(lengths) / (len(bins) * CAP):.2%} (axolotl publishes 2.2 s, 99.7% for 1M)")


if __name__ == "__main__":
    main()
