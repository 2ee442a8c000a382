"""Exact semantic search as one fused Triton kernel: the similarity matrix is never written out.

Each program multiplies a tile of rows by a tile of later rows (S = X_i · X_jᵀ, fp16/bf16 in,
fp32 accumulate, upper triangle only) and, in the epilogue, while S is still in registers:

1. raises each row's and each column's nearest-neighbour similarity (an atomic max into a
   float32 vector, sent only where the tile beats the value already stored);
2. appends every pair with S ≥ threshold to a preallocated buffer through an atomic counter
   (the counter keeps counting past the end, so an overflow is seen: the buffer grows and the
   launches that overflowed run again, pairs only);
3. appends the pairs of the borderline band [threshold − margin, threshold) that are at or above
   a floor to a bounded buffer. Between launches the buffer is cut to its best `borderline` pairs
   on the device and the floor rises to the lowest of them, so the buffer stays small. Pairs that
   did not fit are remembered by their highest score; if that could be in the top `borderline`,
   a band-only pass runs again from the raised floor (never needed unless the band is dense).

Tiles of 128×256 with K = d in steps of 64, loaded by TMA; one program per SM walks the tiles of a
launch (persistent). Only the row/column maxima run on every tile: the pair and band work runs only
in tiles whose maximum reaches the band's floor. Memory is O(n·d + pairs + band buffer). Rows are
launched in groups of GROUP_ROWS (one launch per group, its tiles ordered column by column so that
neighbouring programs share tiles in L2); the host looks at the counters once per batch of
launches (one progress-bar step). 1M×1M rows (d=384, fp16) take 1.30 s on one H200, 38% of its
bf16 matmul rate (benchmarks/bench_search_kernel.py).

Runs on CUDA, or on the CPU under Triton's interpreter (`TRITON_INTERPRET=1`, for tests).
"""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np

try:  # optional: not installed on CPU machines and in CI
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is absent
    triton = None

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# (BM, BN, BK, num_warps, num_stages, programs per SM (0: one program per tile), TMA loads); the faster
# on the first (largest) launch is kept per GPU, d, dtype and size (all timings in `timings`). Both ran
# and were checked on an H200 (benchmarks/RESULTS.md); the persistent TMA one wins from ~100k rows.
# Tried and dropped: `tl.range(..., flatten=True)` (triton 3.6's TritonGPUFuseNestedLoops fails on the
# epilogue's branches), 128x128 and 256x128 tiles (not faster on the first launch; not kept untested).
GPU_CONFIGS = [
    (128, 256, 64, 8, 3, 0, False),  # one tile per program, pointer loads (the first version)
    (128, 256, 64, 8, 3, 1, True),  # persistent: one program per SM walks the tiles, TMA loads
]
INTERPRET_CONFIG = (32, 32, 32, 4, 1, 1, False)
INTERPRET_SMS = 3  # "SMs" under the interpreter: 3 programs walk the tiles, as a persistent kernel would
GROUP_ROWS = 1024  # rows per launch; a multiple of every BM and BN above
BATCH_PAIRS = 1 << 34  # row pairs a batch of launches covers at most (~1.7e10: 1M rows make 32 batches)
MIN_BATCHES = 32  # batches of a search at least (fewer where there are fewer launches)
_chosen: dict[tuple, tuple] = {}


class KernelUnavailable(RuntimeError):
    """No configuration of the kernel compiles and runs on this GPU (semantic_pairs falls back to torch)."""

timings: dict[tuple, dict] = {}  # key -> {config: seconds of 5 launches}, from _pick_config


def available(device: str) -> bool:
    """Whether the kernel can run for `device`: triton importable and a CUDA device present."""
    if triton is None or INTERPRET:  # the interpreter (tests) runs only when asked for (kernel=True)
        return False
    import torch

    return device.startswith("cuda") and torch.cuda.is_available()


if triton is not None:

    @triton.jit
    def _append(mask, s, rows, cols, base, cap, a_ptr, b_ptr, s_ptr):
        """Write the masked (row, col, score) of a tile at base + rank (row-major rank inside the tile)."""
        m = mask.to(tl.int32)
        per_row = tl.sum(m, axis=1)
        rank = (tl.cumsum(per_row, 0) - per_row)[:, None] + tl.cumsum(m, axis=1) - m
        slot = base + rank
        ok = mask & (slot < cap)
        tl.store(a_ptr + slot, (rows[:, None] + cols[None, :] * 0).to(tl.int32), mask=ok)
        tl.store(b_ptr + slot, (cols[None, :] + rows[:, None] * 0).to(tl.int32), mask=ok)
        tl.store(s_ptr + slot, s, mask=ok)
        return mask & (slot >= cap)

    # sizes and offsets are not specialised: triton would otherwise compile the kernel again whenever one
    # of them changes its divisibility by 16 (the persistent launch's `progs` is the SM count, 132 on an
    # H200). The first 1M search after a 2,048-row warm-up paid 12-18 s, likely such compilations.
    @triton.jit(do_not_specialize=["n", "row0", "num_tiles", "progs", "pcap", "bcap"])
    def _search_tiles(x_ptr, a_desc, b_desc, n, stride, row0, num_tiles, progs, thr, floor_ptr, nearest_ptr,
                      pa_ptr, pb_ptr, ps_ptr, pcnt_ptr, pcap,
                      ba_ptr, bb_ptr, bs_ptr, bcnt_ptr, bcap, lost_ptr,
                      d: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GM: tl.constexpr,
                      TMA: tl.constexpr, NEAREST: tl.constexpr, PAIRS: tl.constexpr, BAND: tl.constexpr):
        # tiles of this launch: GM row blocks × the column blocks from row0 on, column by column (so that
        # neighbouring programs share tiles in L2); a program takes every progs-th tile (persistent when
        # progs < num_tiles). Tiles wholly below the diagonal (a few near row0) are masked, not skipped.
        for t in tl.range(tl.program_id(0), num_tiles, progs):
            first_row = row0 + (t % GM) * BM
            first_col = row0 + (t // GM) * BN  # row0 is a multiple of BN
            rows = first_row + tl.arange(0, BM)
            cols = first_col + tl.arange(0, BN)
            acc = tl.zeros((BM, BN), dtype=tl.float32)
            for k in range(0, d, BK):  # d is a constexpr (and the interpreter needs it)
                if TMA:  # rows past the end come back as zeros
                    a = a_desc.load([first_row, k])
                    b = b_desc.load([first_col, k])
                else:
                    ks = k + tl.arange(0, BK)
                    a_at = x_ptr + rows.to(tl.int64)[:, None] * stride + ks[None, :]
                    b_at = x_ptr + cols.to(tl.int64)[:, None] * stride + ks[None, :]
                    if d % BK == 0:  # a mask along K would stop vectorised loads
                        a = tl.load(a_at, mask=rows[:, None] < n, other=0.0)
                        b = tl.load(b_at, mask=cols[:, None] < n, other=0.0)
                    else:
                        a = tl.load(a_at, mask=(rows[:, None] < n) & (ks[None, :] < d), other=0.0)
                        b = tl.load(b_at, mask=(cols[:, None] < n) & (ks[None, :] < d), other=0.0)
                acc = tl.dot(a, tl.trans(b), acc)
            s = tl.where((cols[None, :] > rows[:, None]) & (cols[None, :] < n), acc, -2.0)
            row_max = tl.max(s, axis=1)
            if NEAREST:
                stored = tl.load(nearest_ptr + rows, mask=rows < n, other=3.0)
                tl.atomic_max(nearest_ptr + rows, row_max, mask=row_max > stored)
                col_max = tl.max(s, axis=0)
                stored = tl.load(nearest_ptr + cols, mask=cols < n, other=3.0)
                tl.atomic_max(nearest_ptr + cols, col_max, mask=col_max > stored)
            lowest = thr
            if BAND:
                lowest = tl.load(floor_ptr)
            if tl.max(row_max) >= lowest:  # most tiles hold no pair and nothing of the band
                if PAIRS:
                    hit = s >= thr
                    hits = tl.sum(hit.to(tl.int32))
                    if hits > 0:
                        base = tl.atomic_add(pcnt_ptr, hits)
                        _append(hit, s, rows, cols, base, pcap, pa_ptr, pb_ptr, ps_ptr)
                if BAND:
                    band = (s < thr) & (s >= lowest)
                    hits = tl.sum(band.to(tl.int32))
                    if hits > 0:
                        base = tl.atomic_add(bcnt_ptr, hits)
                        lost = _append(band, s, rows, cols, base, bcap, ba_ptr, bb_ptr, bs_ptr)
                        if base + hits > bcap:
                            tl.atomic_max(lost_ptr, tl.max(tl.where(lost, s, -2.0)))


def _sms(device) -> int:
    import torch

    return INTERPRET_SMS if INTERPRET else torch.cuda.get_device_properties(device).multi_processor_count


def _tma_ok(x) -> bool:
    """TMA needs 16-byte aligned rows (counted in elements here, as triton's interpreter checks)."""
    return x.stride(0) % 16 == 0 and x.data_ptr() % 16 == 0


def _descriptors(x, cfg: tuple) -> tuple:
    bm, bn, bk, *_, tma = cfg
    if not tma:
        return x, x
    from triton.tools.tensor_descriptor import TensorDescriptor

    return TensorDescriptor.from_tensor(x, [bm, bk]), TensorDescriptor.from_tensor(x, [bn, bk])


def _launch(x, descs, row0: int, cfg: tuple, thr: float, buf: dict, nearest: bool, pairs: bool, band: bool) -> None:
    bm, bn, bk, warps, stages, per_sm, tma = cfg
    n, d = x.shape
    tiles = GROUP_ROWS // bm * triton.cdiv(n - row0, bn)
    progs = min(tiles, per_sm * _sms(x.device)) if per_sm else tiles
    extra = {} if INTERPRET else {"num_warps": warps, "num_stages": stages}
    _search_tiles[(progs,)](
        x, descs[0], descs[1], n, x.stride(0), row0, tiles, progs, thr, buf["floor"], buf["nearest"],
        buf["pa"], buf["pb"], buf["ps"], buf["pcnt"], buf["pa"].numel(),
        buf["ba"], buf["bb"], buf["bs"], buf["bcnt"], buf["ba"].numel(), buf["lost"],
        d=d, BM=bm, BN=bn, BK=bk, GM=GROUP_ROWS // bm, TMA=tma, NEAREST=nearest, PAIRS=pairs, BAND=band, **extra,
    )


def _buffers(n: int, device, pair_cap: int, band_cap: int, floor: float) -> dict:
    import torch

    def ints(k):
        return torch.empty(k, dtype=torch.int32, device=device)

    return {
        "nearest": torch.full((n,), -1.0, dtype=torch.float32, device=device),
        "pa": ints(pair_cap), "pb": ints(pair_cap), "ps": torch.empty(pair_cap, dtype=torch.float32, device=device),
        "pcnt": torch.zeros(1, dtype=torch.int32, device=device),
        "ba": ints(band_cap), "bb": ints(band_cap), "bs": torch.empty(band_cap, dtype=torch.float32, device=device),
        "bcnt": torch.zeros(1, dtype=torch.int32, device=device),
        "floor": torch.full((1,), floor, dtype=torch.float32, device=device),
        "lost": torch.full((1,), -2.0, dtype=torch.float32, device=device),
    }


def _pick_config(x, thr: float, floor: float) -> tuple:
    """The fastest of GPU_CONFIGS on this GPU, d, dtype and size, timed on the first (largest) launch."""
    import torch

    if INTERPRET:
        return INTERPRET_CONFIG
    key = (torch.cuda.get_device_name(x.device), x.shape[1], x.dtype, x.shape[0].bit_length() // 2)  # n: ×4 buckets
    if key not in _chosen:
        times = timings.setdefault(key, {})
        for cfg in GPU_CONFIGS if _tma_ok(x) else [c for c in GPU_CONFIGS if not c[6]]:
            buf = _buffers(x.shape[0], x.device, 1 << 16, 1 << 12, floor)
            try:
                descs = _descriptors(x, cfg)
                _launch(x, descs, 0, cfg, thr, buf, True, True, True)  # compile + warm
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(5):
                    _launch(x, descs, 0, cfg, thr, buf, True, True, True)
                torch.cuda.synchronize()
                times[cfg] = time.perf_counter() - t0
            except Exception as e:  # noqa: BLE001 - a config this GPU cannot run (shared memory) is skipped
                times[cfg] = repr(e)[:120]
        ran = [c for c in times if isinstance(times[c], float)]
        if not ran:
            raise KernelUnavailable("no configuration of the search kernel ran on this GPU: "
                                    + "; ".join(f"{_name(c)}: {t}" for c, t in times.items()))
        _chosen[key] = min(ran, key=times.get)
    return _chosen[key]


def _name(cfg: tuple) -> str:
    bm, bn, bk, warps, stages, per_sm, tma = cfg
    walk = f"{per_sm}/SM" if per_sm else "1 tile/program"
    return f"{bm}x{bn}x{bk} w{warps} s{stages} {walk}{' TMA' if tma else ''}"


def _batches(n: int, first_rows: int | None = None) -> list[list[int]]:
    """Launch starts (row0) of the first `first_rows` rows (all by default), split into batches of
    equal tile area: MIN_BATCHES, or as many as keep a batch within BATCH_PAIRS row pairs (at most one launch
    each). The band's floor rises only between batches: 32 batches of 10M rows (1.6×10¹² pairs each)
    let the first overflow the band buffer before the floor rose, and its lost pairs could send the
    whole search round again (a band pass) for the borderline list."""
    starts = list(range(0, n if first_rows is None else min(n, first_rows), GROUP_ROWS))
    area = np.array([n - s for s in starts], dtype=np.float64)
    parts = max(MIN_BATCHES, int(np.ceil(area.sum() * GROUP_ROWS / BATCH_PAIRS)))
    edges = np.searchsorted(np.cumsum(area), np.linspace(0, area.sum(), parts + 1)[1:-1], side="right")
    return [b.tolist() for b in np.split(np.array(starts), edges) if len(b)]


def _keep_best_band(buf: dict, k: int, band_lo: float) -> None:
    """On the device: cut the band buffer to its best k pairs and raise the floor to the lowest of them."""
    import torch

    cap = buf["ba"].numel()
    count = buf["bcnt"].clamp(max=cap)
    vals = torch.where(torch.arange(cap, device=count.device) < count, buf["bs"], float("-inf"))
    top = torch.topk(vals, min(k, cap))
    for name in ("ba", "bb"):
        buf[name][: len(top.indices)] = buf[name][top.indices]
    buf["bs"][: len(top.values)] = top.values
    buf["bcnt"].copy_(count.clamp(max=k))
    if len(top.values) == k:
        buf["floor"].copy_(torch.clamp(top.values[-1:], min=band_lo))


def kernel_pairs(emb, threshold: float, *, borderline: int = 50, margin: float = 0.1, progress: bool = False,
                 pair_capacity: int | None = None, band_capacity: int = 1 << 15, config: tuple | None = None,
                 first_rows: int | None = None):
    """(a, b, score, nearest, below, stats) as in `semantic.semantic_pairs`; `emb` a 2-D torch tensor
    of L2-normalised rows on the GPU (fp16 or bf16; float32 under the interpreter). `first_rows`
    (a multiple of GROUP_ROWS): only the pairs whose first row is among them (one GPU's share)."""
    import torch
    from tqdm.auto import tqdm

    x = emb.contiguous()
    n, d = x.shape
    band_lo = threshold - margin
    on_device = torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()  # triton launches there
    with on_device:
        cfg = config or (GPU_CONFIGS[0] if n == 0 else _pick_config(x, threshold, band_lo))  # n == 0: no launch
    if cfg[6] and not _tma_ok(x):
        cfg = (*cfg[:6], False)
    cap = pair_capacity or max(1 << 16, 4 * n)
    band_cap = max(band_capacity, 4 * borderline)
    buf = _buffers(n, x.device, cap, band_cap, band_lo)
    descs = _descriptors(x, cfg)
    reruns, batches = 0, _batches(n, first_rows=first_rows)
    with torch.inference_mode(), on_device:
        for batch in tqdm(batches, desc="search", unit="batch", disable=not progress):
            before = int(buf["pcnt"].item())
            for row0 in batch:
                _launch(x, descs, row0, cfg, threshold, buf, True, True, borderline > 0)
            if borderline:
                _keep_best_band(buf, borderline, band_lo)
            count = int(buf["pcnt"].item())
            if count > buf["pa"].numel():  # the buffer overflowed: grow it, run this batch's pairs again
                reruns += 1
                grown = 2 * count
                for name in ("pa", "pb", "ps"):
                    new = torch.empty(grown, dtype=buf[name].dtype, device=x.device)
                    new[:before] = buf[name][:before]
                    buf[name] = new
                buf["pcnt"].fill_(before)
                for row0 in batch:
                    _launch(x, descs, row0, cfg, threshold, buf, False, True, False)
        band_passes = 1
        # pairs of the band that did not fit could belong to the best `borderline`: again from the floor
        while borderline and band_passes < 8 and float(buf["lost"].item()) > float(buf["floor"].item()):
            band_passes += 1
            buf["lost"].fill_(-2.0)
            buf["bcnt"].zero_()  # the floor stays: everything at or above it is found again
            for batch in batches:
                for row0 in batch:
                    _launch(x, descs, row0, cfg, threshold, buf, False, False, True)
                _keep_best_band(buf, borderline, band_lo)
        count = int(buf["pcnt"].item())
        a, b, s = (buf[name][:count].long() if name != "ps" else buf[name][:count] for name in ("pa", "pb", "ps"))
        order = torch.argsort(a * n + b)
        nb = int(buf["bcnt"].item()) if borderline else 0
        band = [buf[name][:nb] for name in ("ba", "bb", "bs")]
        top = torch.argsort(band[2], descending=True, stable=True)
        below = (band[0][top].long().cpu().numpy(), band[1][top].long().cpu().numpy(), band[2][top].cpu().numpy())
        stats = {"search_path": "triton", "tile": _name(cfg), "pair_reruns": reruns,
                 "band_passes": band_passes, "band_exact": float(buf["lost"].item()) <= float(buf["floor"].item())}
        return (a[order].cpu().numpy(), b[order].cpu().numpy(), s[order].cpu().numpy(),
                buf["nearest"].cpu().numpy(), below, stats)
