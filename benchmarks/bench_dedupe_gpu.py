"""GPU benchmark: semantic dedupe of 1,000,000 rows end to end (embed + search + group) on one GPU.

Target: at most 60 s on one H100. Prints the time of each stage. Embeddings are fp16 on CUDA,
texts are length-sorted into batches by sentence-transformers, and the exact search is
dataprep.dedupe.semantic.semantic_pairs (the fused Triton kernel where triton is installed, else
torch block matmuls on the GPU; the search line says which). Grouping is connected
components on the CPU.

Needs only numpy, torch and sentence-transformers (scipy if present); no polars or datasets.
Without CUDA it falls back to a small size on the CPU, to check that it runs.

The text: the real short texts under ../shared/data (as in bench_dedupe.py), 60% originals and
40% copies with small edits; if the data directory is missing, generated sentences instead.

    python benchmarks/bench_dedupe_gpu.py [--rows 1000000] [--threshold 0.9] [--batch-size 1024]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from dataprep.dedupe.groups import group_and_keep  # noqa: E402
from dataprep.dedupe.semantic import semantic_pairs  # noqa: E402


def texts_for(n: int, seed: int = 0) -> tuple[list[str], str]:
    data = ROOT / ".." / "shared" / "data"
    if (data / "goemotions" / "train.tsv").is_file():
        from bench_dedupe import bench_texts

        return bench_texts(n, seed), "real texts from ../shared/data + edited copies"
    rng = random.Random(seed)
    words = ("the a model data train token text user answer question small large fast slow good bad new old "
             "make find write read show tell give take see know want need use run stop start keep drop").split()
    out = dict.fromkeys(" ".join(rng.choice(words) for _ in range(rng.randint(6, 24))) for _ in range(n))
    while len(out) < n:
        out[" ".join(rng.choice(words) for _ in range(rng.randint(6, 24)))] = None
    return list(out)[:n], "generated sentences (../shared/data not found)"


def compare_embedding(enc, texts: list[str], batch_size: int, device: str, rounds: int = 2) -> None:
    """`SentenceTransformer.encode` (the baseline) vs `dataprep.embed.encode` on the same rows, both
    ending with normalised vectors on `device`, both warmed first, interleaved; best of `rounds`."""
    import torch

    from dataprep.embed import encode

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def baseline(rows: list[str]):
        return enc.model.encode(rows, batch_size=batch_size, normalize_embeddings=True, convert_to_tensor=True,
                                show_progress_bar=False)

    def ours(rows: list[str]):
        return torch.from_numpy(encode(enc.model, rows, batch_size)).to(device)

    times: dict[str, list[float]] = {"baseline": [], "ours": []}
    for fn in (baseline, ours):
        fn(texts[: 4 * batch_size])  # warm-up: first CUDA forwards, kernels, allocator
    sync()
    for _ in range(rounds):
        for name, fn in (("baseline", baseline), ("ours", ours)):
            t0 = time.perf_counter()
            fn(texts)
            sync()
            times[name].append(time.perf_counter() - t0)
    base, mine = min(times["baseline"]), min(times["ours"])
    print(f"embedding {len(texts):,} rows, warmed, interleaved, best of {rounds}: "
          f"SentenceTransformer.encode {base:.2f} s ({len(texts) / base:,.0f} rows/s); "
          f"dataprep.embed.encode {mine:.2f} s ({len(texts) / mine:,.0f} rows/s); {base / mine:.1f}x "
          f"(all times: {times})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=None, help="default: 1,000,000 on CUDA, 2,000 on CPU")
    ap.add_argument("--threshold", type=float, default=0.85)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--compare-rows", type=int, default=200_000,
                    help="rows embedded by both the sentence-transformers baseline and ours, side by side")
    args = ap.parse_args()
    import torch

    from dataprep.embed import encode, load_encoder

    cuda = torch.cuda.is_available()
    n = args.rows or (1_000_000 if cuda else 2_000)
    device = "cuda" if cuda else "cpu"
    name = torch.cuda.get_device_name(0) if cuda else "CPU"
    texts, origin = texts_for(n)
    print(f"{n} rows ({origin}) on {name}; model {args.model}; threshold {args.threshold}")

    enc = load_encoder(args.model, device)
    t0 = time.perf_counter()
    enc.model  # noqa: B018  (load the model; timed separately from the stages)
    t_load = time.perf_counter() - t0

    compare_embedding(enc, texts[: min(n, args.compare_rows)], args.batch_size, device)

    t0 = time.perf_counter()
    emb = torch.from_numpy(encode(enc.model, texts, args.batch_size)).to(device)
    if enc.precision == "fp16":
        emb = emb.half()
    if cuda:
        torch.cuda.synchronize()
    t_embed = time.perf_counter() - t0

    t0 = time.perf_counter()
    res = semantic_pairs(emb, args.threshold, device=device)
    t_search = time.perf_counter() - t0

    t0 = time.perf_counter()
    groups = group_and_keep(n, res.a, res.b, res.score)
    t_group = time.perf_counter() - t0

    total = t_embed + t_search + t_group
    print(f"model load {t_load:.1f} s (not counted)")
    print(f"embed  {t_embed:7.2f} s  ({n / t_embed:,.0f} rows/s, {enc.precision}, batch {args.batch_size})")
    print(f"search {t_search:7.2f} s  ({len(res.a):,} pairs ≥ {args.threshold}, {res.stats['search_path']} path)")
    print(f"group  {t_group:7.2f} s  ({len(groups.sizes()):,} groups, {len(groups.removed):,} rows removed)")
    print(f"total  {total:7.2f} s  (embed + search + group; target ≤ 60 s for 1,000,000 rows on one H100)")
    if cuda:
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB "
              f"(embeddings {emb.numel() * emb.element_size() / 2**30:.2f} GiB)")
    # spot check: the blocked search equals the full fp32 matrix on a slice that fits, up to
    # pairs within fp16 rounding (0.005) of the threshold
    m = min(n, 20_000)
    sub = emb[:m].float()
    sims = (sub @ sub.T).cpu().numpy()
    i, j = np.nonzero(np.triu(sims >= args.threshold, k=1))
    check = semantic_pairs(sub, args.threshold, device=device)
    full = set(zip(i.tolist(), j.tolist(), strict=True))
    blocked = set(zip(check.a.tolist(), check.b.tolist(), strict=True))
    differ = full ^ blocked
    borderline = all(abs(sims[a, b] - args.threshold) < 0.005 for a, b in differ)
    print(f"check on the first {m} rows: {len(full)} pairs in the full fp32 matrix, {len(blocked)} found by "
          f"blocked search, {len(differ)} differ (all within fp16 rounding of the threshold: {borderline})")

if __name__ == "__main__":
    main()
