"""Semantic dedupe's host-side steps at 10M rows on a CPU, each timed: is any of them super-linear?

The 10M-row call on 2×H200 did not finish in ~9 minutes (RESULTS.md) and it is not known where the
time went. This runs what the host does around the model and the search at --rows and at a tenth
of it: text generation (`bench_dedupe.fragment_texts`), the product's `embed_texts` with the model
replaced by random unit vectors per chunk (so: text keys, unique texts, the length sort, the chunk
lists, the assembly of the output; --dim 64 float32 stands for 384: 10M × 384 float32 is 15 GB,
more than this VM can hold with the texts), and `group_and_keep` on a synthetic edge list of
--pairs pairs (each an edited copy and its base, as the benchmark's texts make them, scores ≥ 0.85).
Prints seconds, µs a row, and the ratio of the large run's µs a row to the small one's (≈1:
linear).

    PYTHONPATH=. python benchmarks/bench_dedupe_host.py --rows 10000000 --pairs 1500000
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def run(rows: int, pairs: int, dim: int) -> dict[str, float]:
    from bench_dedupe import fragment_texts

    from dataprep import embed
    from dataprep.dedupe.groups import group_and_keep

    times: dict[str, float] = {}

    def timed(name, f, *args, **kwargs):
        t = time.perf_counter()
        out = f(*args, **kwargs)
        times[name] = time.perf_counter() - t
        print(f"  {name:28s} {times[name]:7.2f} s  {times[name] / rows * 1e6:6.2f} µs a row; "
              f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB", flush=True)
        return out

    texts, _ = timed("generate texts", fragment_texts, rows)
    rng = np.random.default_rng(0)

    def random_chunks(chunks, models, batch_size):  # the model: random unit vectors, at once
        for chunk in chunks:
            v = rng.standard_normal((len(chunk), dim), dtype=np.float32)
            yield v / np.linalg.norm(v, axis=1, keepdims=True), np.zeros(len(chunk), dtype=bool)

    enc = embed.load_encoder("minilm", "cpu", workers="threads")
    enc.models = lambda: [None]
    stages = {"keys": embed.text_keys, "unique": np.unique}
    for name, f in stages.items():  # the steps of embed_texts, timed inside the real call
        def wrapped(*a, f=f, name=name, **k):
            t = time.perf_counter()
            out = f(*a, **k)
            times[f"  of which {name}"] = time.perf_counter() - t
            return out
        setattr(embed, "text_keys" if name == "keys" else "np", wrapped if name == "keys" else _NumpyUnique(wrapped))
    embed._encode_on_devices = random_chunks
    try:
        emb = timed("embed_texts (stub model)", embed.embed_texts, texts, enc, use_cache=False)
    finally:
        embed.text_keys, embed.np = stages["keys"], np
    for name in ("  of which keys", "  of which unique"):
        print(f"  {name:28s} {times[name]:7.2f} s  {times[name] / rows * 1e6:6.2f} µs a row", flush=True)
    assert emb.shape == (rows, dim)
    base = rng.integers(0, rows, size=pairs)
    copy = rng.integers(0, rows, size=pairs)
    a, b = np.minimum(base, copy), np.maximum(base, copy)
    keep = a != b
    score = rng.uniform(0.85, 1.0, size=int(keep.sum())).astype(np.float32)
    groups = timed("group_and_keep", group_and_keep, rows, a[keep], b[keep], score)
    print(f"  {len(groups.removed):,} rows removed", flush=True)
    return times


class _NumpyUnique:
    """numpy, with `unique` timed (embed_texts calls np.unique once)."""

    def __init__(self, unique) -> None:
        self.unique = unique

    def __getattr__(self, name):
        return getattr(np, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--pairs", type=int, default=1_500_000)
    ap.add_argument("--dim", type=int, default=64)
    args = ap.parse_args()
    small, large = args.rows // 10, args.rows
    print(f"{small:,} rows, {args.pairs // 10:,} pairs:", flush=True)
    t_small = run(small, args.pairs // 10, args.dim)
    print(f"{large:,} rows, {args.pairs:,} pairs:", flush=True)
    t_large = run(large, args.pairs, args.dim)
    print("µs a row at the large size over the small (1: linear): "
          + ", ".join(f"{k.strip()} {t_large[k] / t_small[k] / 10:.2f}" for k in t_large), flush=True)


if __name__ == "__main__":
    main()
