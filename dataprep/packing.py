"""Packing: put whole sequences into fixed-capacity bins with best-fit-decreasing.

A whole-dataset step kept apart from the per-batch tokenization. No sequence is split; each
packed row carries `position_ids` that restart at 0 for every sequence and `seq_lens`, so a
padding-free collator (FlashAttention varlen, or a block-diagonal mask) keeps sequences
isolated. The first label of every packed sequence is set to -100: the model's label shift
would otherwise train the last token of one sequence to predict the first of the next
(unpacked rows never train that label either, since nothing precedes it).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataprep.records import IGNORE_INDEX, SHARD_COLUMNS


def pack_bfd(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Best-fit-decreasing: indices of `lengths` grouped into bins of at most `capacity` tokens.

    Items are taken longest first; each goes to the open bin with the least room that still
    fits it. Open bins are kept by remaining room in a sorted list of distinct room values
    (at most capacity + 1 of them), so each placement is a bisect. Bins come out ordered by
    their first (longest) item; within a bin, items are in placement order.
    """
    if any(n > capacity for n in lengths):
        raise ValueError(f"a sequence is longer than the bin capacity {capacity}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins: list[list[int]] = []
    room_values: list[int] = []  # sorted distinct remaining-room values of open bins
    by_room: dict[int, list[int]] = {}  # room -> bin ids with that room
    for i in order:
        n = lengths[i]
        j = bisect.bisect_left(room_values, n)
        if j < len(room_values):
            room = room_values[j]
            b = by_room[room].pop()
            if not by_room[room]:
                del by_room[room]
                room_values.pop(j)
        else:
            b, room = len(bins), capacity
            bins.append([])
        bins[b].append(i)
        left = room - n
        if left > 0:  # a full bin is closed for good
            if left not in by_room:
                by_room[left] = []
                bisect.insort(room_values, left)
            by_room[left].append(b)
    return bins


PACKED_SCHEMA = pa.schema(
    [(name, SHARD_COLUMNS[name]) for name in ("input_ids", "labels", "length", "position_ids", "seq_lens")]
)


def packed_table(rows: pa.Table, bins: list[list[int]]) -> pa.Table:
    """The packed rows of `rows` (columns input_ids, labels, length) for `bins` of row indices."""
    if not bins:
        return PACKED_SCHEMA.empty_table()
    order = np.fromiter((i for b in bins for i in b), dtype=np.int64)
    taken = rows.take(pa.array(order))
    lens = taken.column("length").to_numpy()
    ids = pc.list_flatten(taken.column("input_ids")).to_numpy()
    labels = pc.list_flatten(taken.column("labels")).to_numpy().copy()
    seq_starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    labels[seq_starts] = IGNORE_INDEX
    positions = np.arange(len(ids), dtype=np.int32) - np.repeat(seq_starts, lens).astype(np.int32)
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
            "seq_lens": pa.ListArray.from_arrays(seq_offsets, pa.array(lens, pa.int32())),
        },
        schema=PACKED_SCHEMA,
    )


def packing_efficiency(lengths: Sequence[int], n_bins: int, capacity: int) -> float:
    """Real tokens / bin capacity."""
    return float(sum(lengths)) / (n_bins * capacity) if n_bins else 0.0
