"""Best-fit-decreasing packing and the packed rows' position_ids / seq_lens / labels."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pytest

from dataprep.packing import pack, pack_bfd, pack_min_slack, packed_table, packing_efficiency
from dataprep.records import IGNORE_INDEX as M


def test_bfd_hand_example():
    # sorted: 5,4,3,3,2,1. 5->A(room 3); 4->B(room 4); 3->A (best fit, room 0); 3->B (room 1);
    # 2 fits nowhere -> C; 1 -> B (room 1 is the tightest fit)
    assert pack_bfd([5, 4, 3, 3, 2, 1], 8) == [[0, 2], [1, 3, 5], [4]]
    assert packing_efficiency([5, 4, 3, 3, 2, 1], 3, 8) == 18 / 24


def test_min_slack_reaches_the_bound_where_bfd_does_not():
    # total 20, capacity 10: BFD puts 4+4 together (room 2 left) and needs a third bin for the last 3;
    # min-slack fills each bin to exactly 10 with 4+3+3
    lengths = [4, 4, 3, 3, 3, 3]
    assert [sorted(lengths[i] for i in b) for b in pack_bfd(lengths, 10)] == [[4, 4], [3, 3, 3], [3]]
    tight = pack_min_slack(lengths, 10)
    assert [sorted(lengths[i] for i in b) for b in tight] == [[3, 3, 4], [3, 3, 4]]
    assert sorted(i for b in tight for i in b) == list(range(6))
    assert pack(lengths, 10) == (tight, "minimum-bin-slack")
    assert pack([5, 4, 3, 3, 2, 1], 8)[1] == "best-fit-decreasing"  # BFD already at the bound


@pytest.mark.parametrize("packer", [pack_bfd, pack_min_slack])
def test_packers_never_split_or_overfill(packer):
    rng = random.Random(1)
    lengths = [rng.randint(1, 700) for _ in range(3000)]
    bins = packer(lengths, 1024)
    assert sorted(i for b in bins for i in b) == list(range(3000))
    assert all(sum(lengths[i] for i in b) <= 1024 for b in bins)


def test_bfd_never_splits_or_overfills_and_places_every_item_once():
    rng = random.Random(0)
    lengths = [rng.randint(1, 300) for _ in range(2000)]
    bins = pack_bfd(lengths, 512)
    assert sorted(i for b in bins for i in b) == list(range(2000))
    assert all(sum(lengths[i] for i in b) <= 512 for b in bins)
    lower_bound = -(-sum(lengths) // 512)
    assert len(bins) <= lower_bound + 1


def test_bfd_rejects_item_over_capacity():
    with pytest.raises(ValueError, match="capacity"):
        pack_bfd([3, 9], 8)


def test_packed_table_positions_seq_lens_and_boundary_labels():
    rows = pa.table({
        "input_ids": pa.array([[10, 11, 12], [20, 21], [30, 31, 32, 33]], pa.list_(pa.int32())),
        "labels": pa.array([[M, 11, 12], [20, 21], [M, M, 32, 33]], pa.list_(pa.int32())),
        "length": pa.array([3, 2, 4], pa.int32()),
    })
    t = packed_table(rows, [[2, 0], [1]]).to_pylist()
    assert t[0] == {
        "input_ids": [30, 31, 32, 33, 10, 11, 12],
        # the first label of every sequence is -100 so no token learns to predict the next sequence
        "labels": [M, M, 32, 33, M, 11, 12],
        "length": 7,
        "position_ids": [0, 1, 2, 3, 0, 1, 2],
        "seq_lengths": [4, 3],
    }
    assert t[1] == {"input_ids": [20, 21], "labels": [M, 21], "length": 2, "position_ids": [0, 1], "seq_lengths": [2]}


@pytest.mark.slow
def test_stage_pack_alpaca(shared_data, tmp_path):
    """Real alpaca rows packed at 1024: every sequence present once, bins within capacity."""
    import polars as pl
    from datasets import load_from_disk

    from dataprep.tokenize import tokenize

    rows = json.loads((shared_data / "alpaca_en_demo.json").read_text())[:300]
    d = tmp_path / "records"
    d.mkdir()
    prompts = [f"### Instruction:\n{r['instruction']}\n{r['input']}\n\n### Response:\n" for r in rows]
    pl.DataFrame({"prompt": prompts, "completion": [r["output"] for r in rows], "source": ["a"] * 300,
                  "row": list(range(300))}).write_parquet(d / "records.parquet")
    plain = tokenize(d, tmp_path / "plain", max_len=1024, progress=False)
    packed = tokenize(d, tmp_path / "packed", max_len=1024, pack=True, progress=False)
    ds = load_from_disk(str(tmp_path / "packed"))
    assert packed.lineage.packed and packed.get("packing")["bins"] == len(ds)
    assert sum(len(s) for s in ds["seq_lengths"]) == 300
    assert all(n <= 1024 and n == sum(s) for n, s in zip(ds["length"], ds["seq_lengths"], strict=True))
    assert packed.get("packing")["efficiency"] == pytest.approx(plain.get("token_stats")["total"] / (len(ds) * 1024), abs=1e-5)
    assert packed.get("token_stats")["trainable"] == sum(sum(x != M for x in r) for r in ds["labels"])
    # the multiset of sequences is unchanged by packing
    unpacked = sorted(tuple(x) for x in load_from_disk(str(tmp_path / "plain"))["input_ids"])
    seqs = []
    for ids, lens in zip(ds["input_ids"], ds["seq_lengths"], strict=True):
        start = 0
        for n in lens:
            seqs.append(tuple(ids[start : start + n]))
            start += n
    assert sorted(seqs) == unpacked
