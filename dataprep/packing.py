"""Packing: put whole sequences into fixed-capacity bins (best-fit-decreasing, then min-slack).

`pack` runs best-fit-decreasing; when that needs more bins than ceil(total / capacity) it
also tries minimum-bin-slack (fill one bin at a time by a bounded subset search) and keeps
the one with fewer bins: on small sets one extra BFD bin costs a whole percent.

A whole-dataset step kept apart from the per-batch tokenization. No sequence is split; each
packed row carries `position_ids` that restart at 0 for every sequence and `seq_lengths`, so a
padding-free collator (FlashAttention varlen, or a block-diagonal mask) keeps sequences
isolated. The first label of every packed sequence is set to -100
(`records.mask_sequence_starts`): the model's label shift would otherwise train the last token
of one sequence to predict the first of the next.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataprep.records import SHARD_COLUMNS, mask_sequence_starts


def pack_bfd(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Best-fit-decreasing: indices of `lengths` grouped into bins of at most `capacity` tokens.

    Items are taken longest first; each goes to the open bin with the least room that still
    fits it. Open bins are kept by remaining room in a sorted list of distinct room values
    (at most capacity + 1 of them), so each placement is a bisect. Bins come out ordered by
    their first (longest) item; within a bin, items are in placement order.
    """
    if len(lengths) and max(lengths) > capacity:
        raise ValueError(f"a sequence is longer than the bin capacity {capacity}")
    sizes = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-sizes, kind="stable")
    bins: list[list[int]] = []
    room_values: list[int] = []  # sorted distinct remaining-room values of open bins
    by_room: dict[int, list[int]] = {}  # room -> bin ids with that room
    bisect_left, insort = bisect.bisect_left, bisect.insort
    for i, n in zip(order.tolist(), sizes[order].tolist(), strict=True):
        j = bisect_left(room_values, n)
        if j < len(room_values):
            room = room_values[j]
            same = by_room[room]
            b = same.pop()
            if not same:
                del by_room[room]
                del room_values[j]
        else:
            b, room = len(bins), capacity
            bins.append([])
        bins[b].append(i)
        left = room - n
        if left > 0:  # a full bin is closed for good
            if left in by_room:
                by_room[left].append(b)
            else:
                by_room[left] = [b]
                insort(room_values, left)
    return bins


def pack_min_slack(lengths: Sequence[int], capacity: int, budget: int = 2000) -> list[list[int]]:
    """Minimum-bin-slack packing: fill one bin at a time, as full as a bounded search can make it.

    Each bin takes the longest remaining sequence, then a depth-first search (largest fitting
    item first, at most `budget` nodes per bin) looks for the subset of the remaining sequences
    that leaves the least room; a perfect fill ends the search. Slower than BFD, but it reaches
    the lower bound on sets where BFD's leftover room adds up to a whole extra bin.
    """
    if any(n > capacity for n in lengths):
        raise ValueError(f"a sequence is longer than the bin capacity {capacity}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    vals = [lengths[i] for i in order]  # ascending, for bisect
    bins = []
    while vals:
        first = len(vals) - 1
        picked = _best_subset(vals, first, capacity - vals[first], budget)
        take = sorted([first, *picked], reverse=True)
        bins.append([order[j] for j in take])
        for j in take:  # descending, so earlier indices stay valid
            del vals[j]
            del order[j]
    return bins


def _best_subset(vals: list[int], hi: int, room: int, budget: int) -> list[int]:
    """Indices below `hi` of a subset of `vals` (ascending) with the largest sum <= room."""
    best: list = [0, []]
    nodes = 0

    def dfs(hi: int, left: int, chosen: list[int]) -> bool:
        nonlocal nodes
        used = room - left
        if used > best[0]:
            best[0], best[1] = used, list(chosen)
            if left == 0:
                return True
        j = bisect.bisect_right(vals, left, 0, hi) - 1
        while j >= 0 and nodes < budget:
            nodes += 1
            chosen.append(j)
            if dfs(j, left - vals[j], chosen):
                return True
            chosen.pop()
            j = bisect.bisect_left(vals, vals[j], 0, j) - 1  # skip equal values: same sums
        return False

    dfs(hi, room, [])
    return best[1]


# Above this many sequences the search's cost grows faster than its gain (BFD is then within a
# bin or two of the bound, a tiny fraction of the total).
MIN_SLACK_MAX_ITEMS = 200_000


def pack(lengths: Sequence[int], capacity: int) -> tuple[list[list[int]], str]:
    """Best-fit-decreasing; where it uses more bins than ceil(total / capacity) on a set of
    moderate size, minimum-bin-slack too, keeping whichever uses fewer bins. Returns (bins, algorithm)."""
    bins = pack_bfd(lengths, capacity)
    lower = -(-sum(lengths) // capacity)
    if len(bins) > lower and len(lengths) <= MIN_SLACK_MAX_ITEMS:
        tight = pack_min_slack(lengths, capacity)
        if len(tight) < len(bins):
            return tight, "minimum-bin-slack"
    return bins, "best-fit-decreasing"


PACKED_SCHEMA = pa.schema(
    [(name, SHARD_COLUMNS[name]) for name in ("input_ids", "labels", "length", "position_ids", "seq_lengths")]
)


def packed_table(rows: pa.Table, bins: list[list[int]]) -> pa.Table:
    """The packed rows of `rows` (columns input_ids, labels, length) for `bins` of row indices."""
    if not bins:
        return PACKED_SCHEMA.empty_table()
    order = np.fromiter((i for b in bins for i in b), dtype=np.int64)
    taken = rows.take(pa.array(order))
    lens = taken.column("length").to_numpy()
    ids = pc.list_flatten(taken.column("input_ids")).to_numpy()
    seq_starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    positions = np.arange(len(ids), dtype=np.int32) - np.repeat(seq_starts, lens).astype(np.int32)
    labels = mask_sequence_starts(pc.list_flatten(taken.column("labels")).to_numpy().copy(), positions)
    bin_sizes = np.array([len(b) for b in bins], dtype=np.int64)
    bin_tokens = np.add.reduceat(lens, np.concatenate([[0], np.cumsum(bin_sizes)[:-1]]))
    token_offsets = pa.array(np.concatenate([[0], np.cumsum(bin_tokens)]).astype(np.int32))
    seq_offsets = pa.array(np.concatenate([[0], np.cumsum(bin_sizes)]).astype(np.int32))
    return pa.table(
        {
            "input_ids": pa.ListArray.from_arrays(token_offsets, pa.array(ids, pa.int32())),
            "labels": pa.ListArray.from_arrays(token_offsets, pa.array(labels, pa.int32())),
            "length": pa.array(bin_tokens, pa.int32()),
            "position_ids": pa.ListArray.from_arrays(token_offsets, pa.array(positions, pa.int32())),
            "seq_lengths": pa.ListArray.from_arrays(seq_offsets, pa.array(lens, pa.int32())),
        },
        schema=PACKED_SCHEMA,
    )


def packing_efficiency(lengths: Sequence[int], n_bins: int, capacity: int) -> float:
    """Real tokens / bin capacity."""
    return float(sum(lengths)) / (n_bins * capacity) if n_bins else 0.0
