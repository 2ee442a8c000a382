"""Exact semantic search on one GPU and on every visible GPU, side by side in one run.

`semantic_pairs(x, threshold, devices=[...])` (the product path: the fused kernel where triton is
there; several GPUs split the upper triangle by rows into parts of equal area) on --rows random
unit vectors (fp16, d=--dim) with --plants planted near-duplicate pairs (noise 0.02: cosine ~0.93),
all GPUs first, then GPU 0 alone. Prints seconds, TFLOP/s per GPU, pairs found, the scaling, and
whether both runs found the same pairs (and every planted one).

    PYTHONPATH=. python3 benchmarks/bench_search_gpus.py --rows 10000000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataprep.dedupe.semantic import semantic_pairs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--plants", type=int, default=50_000)
    ap.add_argument("--threshold", type=float, default=0.85)
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("Error: this benchmark needs CUDA GPUs; nothing was measured")
    n, d, k = args.rows, args.dim, args.plants
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(n, d, device="cuda", generator=g), dim=1).half()
    p = torch.randperm(n, device="cuda", generator=g)[: 2 * k]
    a, b = p[:k], p[k:]
    noise = 0.02 * torch.randn(k, d, device="cuda", generator=g)
    x[b] = torch.nn.functional.normalize(x[a].float() + noise, dim=1).half()
    planted = set(zip(torch.minimum(a, b).tolist(), torch.maximum(a, b).tolist(), strict=True))
    gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    print(f"{n:,} x {d} fp16 random unit vectors + {k:,} planted pairs; {len(gpus)} x {torch.cuda.get_device_name(0)}")
    runs = {}
    for devices in ([gpus, gpus[:1]] if len(gpus) > 1 else [gpus]):
        t = time.perf_counter()
        res = semantic_pairs(x, args.threshold, devices=devices)
        torch.cuda.synchronize()
        s = time.perf_counter() - t
        found = set(zip(res.a.tolist(), res.b.tolist(), strict=True))
        runs[len(devices)] = (s, found)
        print(f"{len(devices)} GPU(s): {s:.1f} s, {n * n * d / s / 1e12 / len(devices):.0f} TFLOP/s per GPU, "
              f"{len(found):,} pairs (planted found: {len(planted & found):,} of {len(planted):,}), "
              f"parts {res.stats.get('part_rows')}, tile {res.stats.get('tile')}", flush=True)
    if len(runs) > 1:
        (s_all, f_all), (s_one, f_one) = runs[len(gpus)], runs[1]
        print(f"scaling {s_one / s_all:.2f}x on {len(gpus)} GPUs; same pairs: {f_all == f_one}")


if __name__ == "__main__":
    main()
