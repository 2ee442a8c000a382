"""Semantic duplicates: every pair of rows whose embeddings have cosine ≥ threshold.

`semantic_pairs` is exact: it multiplies blocks of rows against the rows after them
(upper triangle only) with torch, on CPU or GPU, and keeps only the pairs at or above the
threshold, so memory is O(n·d + pairs + block·n), never n×n. On a CUDA GPU with triton
installed it runs the fused kernel of `search_kernel` instead (same result, the similarity
blocks never written to memory; `stats["search_path"]` says which ran). On the way it also records
each row's nearest-neighbour similarity (for the report's histogram) and the highest-scoring
pairs just below the threshold (the borderline cases a user needs to choose a threshold).

`cluster_pairs` is the SemDeDup-style approximation for inputs too large for exact search:
spherical k-means, then exact search within each cluster. It measures its own recall against
exact search for a sample of query rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Elements of one block of the similarity matrix: 32M floats (128 MB) on CPU, 1G on GPU.
CPU_BLOCK_ELEMENTS = 1 << 25
GPU_BLOCK_ELEMENTS = 1 << 30


@dataclass
class SearchResult:
    a: np.ndarray  # int64 row ids, a < b
    b: np.ndarray
    score: np.ndarray  # float32 cosine
    nearest: np.ndarray  # float32, each row's highest similarity to any other row (-1 if n == 1)
    below: tuple[np.ndarray, np.ndarray, np.ndarray] = field(
        default_factory=lambda: (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))
    )
    stats: dict = field(default_factory=dict)


def _as_tensor(emb, device: str):
    import torch

    x = torch.as_tensor(emb)
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    return x.to(device=device, dtype=dtype)


def _block_rows(n: int, device: str, block: int | None) -> int:
    if block:
        return block
    budget = GPU_BLOCK_ELEMENTS if device.startswith("cuda") else CPU_BLOCK_ELEMENTS
    return int(max(16, min(8192, budget // max(n, 1))))


def semantic_pairs(emb, threshold: float, *, device: str = "cpu", devices: list[str] | None = None,
                   block: int | None = None, borderline: int = 50, margin: float = 0.1, progress: bool = False,
                   kernel: bool | None = None) -> SearchResult:
    """All pairs (a < b) with cosine(emb[a], emb[b]) ≥ threshold; `emb` rows must be L2-normalised.

    `kernel`: None runs the fused Triton kernel where it can (CUDA + triton), True insists on it,
    False keeps the torch blocks. `devices`: the search's upper triangle split by rows into parts
    of equal area, one per device, run side by side (default: every GPU when `device` is `cuda`
    and several are visible, else `device` alone); the answer is the one-device answer."""
    from concurrent.futures import ThreadPoolExecutor

    from dataprep.embed import visible_devices

    devices = devices or visible_devices(device)
    n = len(emb)
    if len(devices) == 1 or n < 2 * len(devices):
        return _search(_as_tensor(emb, devices[0]), threshold, None, block, borderline, margin, progress, kernel)
    from dataprep.dedupe import search_kernel

    starts = split_rows(n, len(devices), search_kernel.GROUP_ROWS)  # a kernel's share starts at a launch group
    bounds = list(zip(starts, starts[1:] + [n], strict=True))

    def part(k: int) -> SearchResult:  # rows [lo, hi) against the rows from lo on: the suffix searched, cut at hi
        lo, hi = bounds[k]
        return _search(_as_tensor(emb[lo:], devices[k]), threshold, hi - lo, block, borderline, margin,
                       progress and k == 0, kernel)

    with ThreadPoolExecutor(len(bounds)) as pool:  # GPU work (and torch's CPU kernels) run outside the GIL
        parts = list(pool.map(part, range(len(bounds))))
    return _merge(parts, [lo for lo, _ in bounds], n, borderline, devices)


def split_rows(n: int, parts: int, align: int = 1) -> list[int]:
    """The first row of each of `parts` row ranges of the upper triangle with about equal area
    (row i holds n - i - 1 pairs), each start a multiple of `align` (ranges may come out empty
    for small n: they are dropped)."""
    area = np.cumsum(np.arange(n, 0, -1, dtype=np.float64))
    cuts = np.searchsorted(area, area[-1] * np.arange(1, parts) / parts)
    starts = sorted({0, *(int(c) // align * align for c in cuts)} - {n})
    return [s for s in starts if s < n]


def _merge(parts: list[SearchResult], starts: list[int], n: int, borderline: int, devices: list[str]) -> SearchResult:
    """One SearchResult from the parts (rows from `starts[k]` on, ids relative to it)."""
    nearest = np.full(n, -1.0, dtype=np.float32)
    for res, lo in zip(parts, starts, strict=True):
        np.maximum(nearest[lo:], res.nearest, out=nearest[lo:])
    result = SearchResult(
        np.concatenate([res.a + lo for res, lo in zip(parts, starts, strict=True)]),
        np.concatenate([res.b + lo for res, lo in zip(parts, starts, strict=True)]),
        np.concatenate([res.score for res in parts]),
        nearest,
    )
    ba, bb, bs = (np.concatenate(x) for x in zip(*[(r.below[0] + lo, r.below[1] + lo, r.below[2])
                                                   for r, lo in zip(parts, starts, strict=True)], strict=True))
    top = np.argsort(-bs, kind="stable")[:borderline]
    result.below = (ba[top].astype(np.int64), bb[top].astype(np.int64), bs[top].astype(np.float32))
    result.stats = {**parts[0].stats, "pairs": len(result.a), "devices": devices[: len(parts)],
                    "part_rows": [int(b - a) for a, b in zip(starts, starts[1:] + [n], strict=True)]}
    return result


def _search(x, threshold: float, first_rows: int | None, block: int | None, borderline: int, margin: float,
            progress: bool, kernel: bool | None) -> SearchResult:
    """The pairs of `x` (a tensor on its device) whose first row is among its `first_rows` (all by default)."""
    import torch
    from tqdm.auto import tqdm

    from dataprep.dedupe import search_kernel

    device = str(x.device)
    fallback = {}
    if kernel or (kernel is None and block is None and search_kernel.available(device)):
        try:
            a, b, score, nearest, below, stats = search_kernel.kernel_pairs(
                x, threshold, borderline=borderline, margin=margin, progress=progress, first_rows=first_rows)
            return SearchResult(a, b, score, nearest, below, {**stats, "pairs": len(a)})
        except search_kernel.KernelUnavailable as e:
            if kernel:
                raise
            fallback = {"kernel_unavailable": str(e)}  # an unknown GPU: the torch blocks below, and the report says why
    n = x.shape[0]
    rows = _block_rows(n, device, block)
    nearest = torch.full((n,), -1.0, device=device, dtype=torch.float32)
    found, near_miss = [], []
    with torch.inference_mode():
        for s in tqdm(range(0, n if first_rows is None else first_rows, rows), desc="search", unit="block",
                      disable=not progress):
            e = min(s + rows, n if first_rows is None else first_rows)
            sims = x[s:e] @ x[s:].T  # block × (n - s): this block against itself and later rows (fp16 on GPU)
            # the diagonal and the lower triangle of the square part are not pairs (or are counted elsewhere)
            tri = torch.ones(e - s, e - s, dtype=torch.bool, device=device).tril()
            sims[:, : e - s].masked_fill_(tri, -2.0)
            nearest[s:e] = torch.maximum(nearest[s:e], sims.max(dim=1).values.float())
            nearest[s:] = torch.maximum(nearest[s:], sims.max(dim=0).values.float())
            hit = sims >= threshold
            r, c = hit.nonzero(as_tuple=True)
            if len(r):
                found.append(torch.stack([(r + s).double(), (c + s).double(), sims[r, c].double()], dim=1).cpu())
            if borderline:
                band = (sims >= threshold - margin) & ~hit
                br, bc = band.nonzero(as_tuple=True)
                if len(br):
                    vals = sims[br, bc].double()
                    top = torch.topk(vals, min(borderline, len(vals))).indices
                    near_miss.append(torch.stack([(br[top] + s).double(), (bc[top] + s).double(), vals[top]], dim=1).cpu())
    pairs = torch.cat(found).numpy() if found else np.empty((0, 3))
    result = SearchResult(
        pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64), pairs[:, 2].astype(np.float32),
        nearest.cpu().numpy(),
    )
    if near_miss:
        nm = torch.cat(near_miss).double().numpy()
        top = np.argsort(-nm[:, 2], kind="stable")[:borderline]
        result.below = (nm[top, 0].astype(np.int64), nm[top, 1].astype(np.int64), nm[top, 2].astype(np.float32))
    result.stats = {"search_path": "torch", "block_rows": rows, "pairs": len(result.a), **fallback}
    return result


def kmeans(emb, k: int, *, iters: int = 20, seed: int = 0, device: str = "cpu", sample: int = 100_000) -> np.ndarray:
    """Spherical k-means (cosine) on a sample, then every row assigned to its nearest centroid."""
    import torch

    x = _as_tensor(emb, device)
    n = x.shape[0]
    k = min(k, n)  # more clusters than rows (say, after exact/near removed most) is one row each
    g = torch.Generator().manual_seed(seed)
    fit = x[torch.randperm(n, generator=g)[: max(k, min(n, sample))].to(device)]
    centroids = fit[torch.randperm(len(fit), generator=g)[:k].to(device)].clone()
    for _ in range(iters):
        assign = (fit @ centroids.T).argmax(dim=1)
        summed = torch.zeros_like(centroids).index_add_(0, assign, fit)
        empty = torch.bincount(assign, minlength=k) == 0
        summed[empty] = centroids[empty]  # an empty cluster keeps its old centroid
        centroids = torch.nn.functional.normalize(summed.float(), dim=1).to(x.dtype)
    labels = torch.cat([(x[s : s + 65536] @ centroids.T).argmax(dim=1) for s in range(0, n, 65536)])
    return labels.cpu().numpy()


def cluster_pairs(emb, threshold: float, k: int, *, device: str = "cpu", seed: int = 0, recall_sample: int = 1000,
                  borderline: int = 50) -> SearchResult:
    """SemDeDup-style search: k-means, then exact search inside each cluster; reports recall on a sample."""
    import torch

    emb = np.asarray(emb, dtype=np.float32)
    n = len(emb)
    labels = kmeans(emb, k, seed=seed, device=device)
    parts, nearest = [], np.full(n, -1.0, dtype=np.float32)
    below = []
    for c in np.unique(labels):
        ids = np.flatnonzero(labels == c)
        res = semantic_pairs(emb[ids], threshold, device=device, borderline=borderline)
        parts.append((ids[res.a], ids[res.b], res.score))
        nearest[ids] = res.nearest
        below.append((ids[res.below[0]], ids[res.below[1]], res.below[2]))
    a, b, s = (np.concatenate(p) for p in zip(*parts, strict=False))
    order = np.lexsort((b, a))
    result = SearchResult(np.minimum(a, b)[order], np.maximum(a, b)[order], s[order], nearest)
    ba, bb, bs = (np.concatenate(p) for p in zip(*below, strict=False))
    top = np.argsort(-bs, kind="stable")[:borderline]
    result.below = (ba[top], bb[top], bs[top])
    # recall: every exact pair that touches a random sample of rows, found iff both ends share a cluster
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(n, size=min(n, recall_sample), replace=False))
    x = _as_tensor(emb, device)
    with torch.inference_mode():
        sims = (x[torch.as_tensor(queries, device=device)] @ x.T).float()
        sims[torch.arange(len(queries)), torch.as_tensor(queries, device=device)] = -2.0
        qi, cj = (sims >= threshold).nonzero(as_tuple=True)
    qi, cj = queries[qi.cpu().numpy()], cj.cpu().numpy()
    same = labels[qi] == labels[cj]
    result.stats = {
        "clusters": int(k),
        "pairs": len(result.a),
        "recall_sample_rows": int(len(queries)),
        "recall_sample_pairs": int(len(qi)),
        "recall": float(same.mean()) if len(qi) else 1.0,
    }
    return result
