"""The split stage: exact counts, seeded determinism, stratification proportions on a hand-checkable
fixture, rows of one group (equal normalised text, --group-by, dedupe pairs) in one split, and bad
options as one line with no output."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from dataprep.cli import cli
from dataprep.errors import DataprepError
from dataprep.split import assign_splits, split


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps({**r, "source": "t", "row": i}, ensure_ascii=False) + "\n"
                            for i, r in enumerate(rows)), encoding="utf-8")
    return path


def text_rows(n: int) -> list[dict]:
    return [{"text": f"document number {i} about topic {i % 7}"} for i in range(n)]


def read(out: Path, part: str) -> pl.DataFrame:
    return pl.read_parquet(out / part / "records.parquet")


def test_exact_counts_layout_and_seed(tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", text_rows(100))
    m = split(data, tmp_path / "out", val=0.1, test=0.2, seed=3)
    assert m.get("splits") == {"train": 70, "val": 10, "test": 20}
    assert m.counts.n_in == 100 == sum(m.get("splits").values())
    rows = {p: read(tmp_path / "out", p)["row"].to_list() for p in ("train", "val", "test")}
    assert sorted(rows["train"] + rows["val"] + rows["test"]) == list(range(100))  # each row once
    assert all(r == sorted(r) for r in rows.values())  # input order kept inside a split
    part = json.loads((tmp_path / "out" / "val" / "manifest.json").read_text())
    assert part["counts"]["in"] == 10 and part["lineage"]["kind"] == "text" and part["part"] == "val"
    again = split(data, tmp_path / "again", val=0.1, test=0.2, seed=3)
    assert read(tmp_path / "again", "val")["row"].to_list() == rows["val"] and not again.skipped
    split(data, tmp_path / "other", val=0.1, test=0.2, seed=4)
    assert read(tmp_path / "other", "val")["row"].to_list() != rows["val"]


def test_zero_fraction_writes_no_directory(tmp_path):
    m = split(write_jsonl(tmp_path / "in.jsonl", text_rows(20)), tmp_path / "out", val=0.0, test=0.25)
    assert m.get("splits") == {"train": 15, "val": 0, "test": 5}
    assert not (tmp_path / "out" / "val").exists() and (tmp_path / "out" / "test" / "records.parquet").is_file()


def test_stratified_multilabel_proportions(tmp_path):
    # a: 24 rows, b: 16, c: 8 of 40 rows; 50/25/25 wants a 12/6/6, b 8/4/4, c 4/2/2, rows 20/10/10
    labels = [["a"]] * 16 + [["b"]] * 8 + [["a", "b"]] * 8 + [["c"]] * 8
    rows = [{"text": f"row {i}", "labels": lab} for i, lab in enumerate(labels)]
    out = tmp_path / "out"
    m = split(write_jsonl(tmp_path / "in.jsonl", rows), out, val=0.25, test=0.25, seed=0)
    parts = m.get("splits")
    assert m.get("stratify") == "labels" and sum(parts.values()) == 40
    # label counts come first; rows may differ from 20/10/10 by the a-only/a+b mix a split got
    assert abs(parts["train"] - 20) <= 1 and abs(parts["val"] - 10) <= 1 and abs(parts["test"] - 10) <= 1
    for part, want in {"train": {"a": 12, "b": 8, "c": 4}, "val": {"a": 6, "b": 4, "c": 2},
                       "test": {"a": 6, "b": 4, "c": 2}}.items():
        assert Counter(x for ls in read(out, part)["labels"].to_list() for x in ls) == want
    assert m.get("label_shares")["max_gap"] == 0.0
    assert m.get("label_shares")["labels"]["c"] == {"rows": 8, "train": 0.5, "val": 0.25, "test": 0.25}


def test_unstratified_split_misses_what_stratification_keeps():
    """The same fixture split without labels: at some seed a split's label count is off, which
    stratification never allows (so the stratified test above can fail)."""
    labels = [["a"]] * 16 + [["b"]] * 8 + [["a", "b"]] * 8 + [["c"]] * 8
    fractions = {"train": 0.5, "val": 0.25, "test": 0.25}
    groups = list(range(40))
    off = 0
    for seed in range(10):
        plain = assign_splits(groups, fractions, seed)
        strat = assign_splits(groups, fractions, seed, labels)
        c_plain = sum(1 for i in range(40) if plain[i] == 1 and "c" in labels[i])
        c_strat = sum(1 for i in range(40) if strat[i] == 1 and "c" in labels[i])
        assert c_strat == 2
        off += c_plain != 2
    assert off > 0


def test_groups_stay_together(tmp_path):
    rows = text_rows(60)
    rows[5]["text"] = rows[40]["text"].upper() + "  "  # equal after normalisation
    for i in range(10, 20):  # one user id across ten rows
        rows[i]["user"] = "u1"
    out = tmp_path / "out"
    m = split(write_jsonl(tmp_path / "in.jsonl", rows), out, val=0.2, test=0.2, seed=1, group_by=("user",))
    where = {r: p for p in ("train", "val", "test") for r in read(out, p)["row"].to_list()}
    assert where[5] == where[40]
    assert len({where[i] for i in range(10, 20)}) == 1
    assert m.get("groups")["joined_by"] == {"same_text": 1, "group_by user": 9}
    assert m.get("groups")["largest"] == 10


def test_dedupe_groups_linked_through_a_removed_row(tmp_path):
    from dataprep.dedupe import dedupe

    a = "the quick brown fox jumps over the lazy dog near the river bank at dawn while birds sing"
    b = a + " and the sun rises"
    c = b + " over the hills far away"  # 5-gram Jaccard: a~b 0.83, b~c 0.85, a~c 0.71
    rows = [{"text": t} for t in (a, b, c)] + text_rows(30)
    dd = dedupe(write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "dd", methods=("near",), near_threshold=0.8)
    kept_rows = pl.read_parquet(tmp_path / "dd" / "records.parquet")["row"].to_list()
    assert dd.counts.rejected == 1 and 0 in kept_rows and 2 in kept_rows and 1 not in kept_rows
    m = split(tmp_path / "dd", tmp_path / "out", val=0.3, test=0.3, seed=0)
    where = {r: p for p in ("train", "val", "test") for r in read(tmp_path / "out", p)["row"].to_list()}
    assert where[0] == where[2] and m.get("groups")["joined_by"]["dedupe_pairs"] == 1


@pytest.mark.parametrize("args, message", [
    (["--val", "0.6", "--test", "0.5"], "leaves no rows for train"),
    (["--val", "1.5"], "1.5 is not in the range"),
    (["--stratify", "nope"], "--stratify nope: no column 'nope'"),
    (["--group-by", "meta.id"], "--group-by meta.id: no column 'meta'"),
])
def test_bad_options_one_line_no_output(tmp_path, runner, args, message):
    data = write_jsonl(tmp_path / "in.jsonl", text_rows(10))
    result = runner.invoke(cli, ["split", str(data), "-o", str(tmp_path / "out"), *args])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_too_few_rows_for_a_split_is_an_error(tmp_path):
    with pytest.raises(DataprepError, match="val gets no row of 3"):
        split(write_jsonl(tmp_path / "in.jsonl", text_rows(3)), tmp_path / "out", val=0.01, test=0.3)
    assert not (tmp_path / "out").exists()


def test_cli_summary_and_next_stage_reads_a_part(tmp_path, runner):
    from dataprep.filter import filter as run_filter

    data = write_jsonl(tmp_path / "in.jsonl", text_rows(40))
    result = runner.invoke(cli, ["split", str(data), "-o", str(tmp_path / "out"), "--val", "0.25", "--test", "0.25"])
    assert result.exit_code == 0, result.output
    assert "in 40 = train 20 + val 10 + test 10" in result.output
    m = run_filter(tmp_path / "out" / "train", tmp_path / "f", min_chars=("1",))
    assert m.counts.n_in == 20 and m.lineage.upstream[-1]["stage"] == "split"


def test_rerun_is_skipped_until_a_part_is_gone(tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", text_rows(20))
    split(data, tmp_path / "out", val=0.25, test=0.25)
    assert split(data, tmp_path / "out", val=0.25, test=0.25).skipped
    (tmp_path / "out" / "val" / "records.parquet").unlink()
    m = split(data, tmp_path / "out", val=0.25, test=0.25)
    assert not m.skipped and (tmp_path / "out" / "val" / "records.parquet").is_file()


def test_stratify_by_a_kept_value_column(tmp_path):
    from dataprep.convert import convert

    cats = ["qa"] * 20 + ["code"] * 12 + ["math"] * 8  # 25% of each: 5, 3, 2
    path = tmp_path / "raw.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"task {i}", "output": f"answer {i}", "category": c}) + "\n"
                            for i, c in enumerate(cats)))
    convert(str(path), str(tmp_path / "c"), keep_columns=("category",))
    m = split(tmp_path / "c", tmp_path / "out", val=0.25, test=0.25, stratify="meta.category")
    for part in ("val", "test"):
        got = Counter(r["category"] for r in read(tmp_path / "out", part)["meta"].to_list())
        assert got == {"qa": 5, "code": 3, "math": 2}, part
    assert m.get("label_shares")["max_gap"] == 0.0
