"""convert --keep-columns: user columns in a `meta` struct, matched to their rows past rejects, kept by
dedupe, filter, split and mix; unknown columns and disagreeing sources are one line."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from dataprep.cli import cli
from dataprep.convert import convert
from dataprep.errors import DataprepError

ROWS = [
    {"id": "a1", "category": "math", "lang": "en", "instruction": "Add 2 and 2.", "output": "4"},
    {"id": "a2", "category": "chat", "lang": "en", "instruction": "Say hello.", "output": "   "},  # reject
    {"id": "a3", "category": "math", "lang": "ko", "instruction": "2 더하기 3은?", "output": "5"},
    {"id": "a4", "category": "math", "lang": "en", "instruction": "Add 2 and 2.", "output": "4"},  # dup of a1
    {"id": "a5", "category": "code", "lang": "en", "instruction": "Print hi in Python.", "output": "print('hi')"},
]


def write(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def meta(out: Path, name: str = "records.parquet") -> list[dict]:
    return pl.read_parquet(out / name)["meta"].to_list()


def test_named_columns_follow_their_rows_past_rejects(tmp_path):
    m = convert(write(tmp_path / "in.jsonl", ROWS), str(tmp_path / "c"), keep_columns=("id", "category"))
    assert m.counts.n_out == 4 and m.get("ignored_columns") == ["lang"]
    assert meta(tmp_path / "c") == [{"id": "a1", "category": "math"}, {"id": "a3", "category": "math"},
                                    {"id": "a4", "category": "math"}, {"id": "a5", "category": "code"}]
    assert pl.read_parquet(tmp_path / "c" / "records.parquet")["row"].to_list() == [0, 2, 3, 4]
    assert m.config["keep_columns"] == ["id", "category"]


def test_all_and_a_users_own_source_column(tmp_path):
    rows = [{**r, "source": "crawl-7"} for r in ROWS]
    m = convert(write(tmp_path / "in.jsonl", rows), str(tmp_path / "c"), keep_columns=("all",), fmt="jsonl")
    assert m.get("ignored_columns") == []
    first = pl.read_ndjson(tmp_path / "c" / "records.jsonl")["meta"].to_list()[0]
    assert first == {"id": "a1", "category": "math", "lang": "en", "source": "crawl-7"}


def test_meta_survives_dedupe_filter_split_and_mix(tmp_path):
    from dataprep.dedupe import dedupe
    from dataprep.filter import filter as run_filter
    from dataprep.mix import mix
    from dataprep.split import split

    convert(write(tmp_path / "in.jsonl", ROWS), str(tmp_path / "c"), keep_columns=("id",))
    dedupe(str(tmp_path / "c"), str(tmp_path / "d"), methods=("exact",))
    assert meta(tmp_path / "d") == [{"id": "a1"}, {"id": "a3"}, {"id": "a5"}]
    assert meta(tmp_path / "d", "removed.parquet") == [{"id": "a4"}]
    run_filter(str(tmp_path / "d"), str(tmp_path / "f"), min_chars=("prompt=10",))  # a3: 9 characters
    assert meta(tmp_path / "f") == [{"id": "a1"}, {"id": "a5"}]
    assert meta(tmp_path / "f", "removed.parquet") == [{"id": "a3"}]
    split(str(tmp_path / "f"), str(tmp_path / "s"), val=0.0, test=0.5, group_by=("meta.id",))
    ids = [m["id"] for part in ("train", "test") for m in meta(tmp_path / "s" / part)]
    assert sorted(ids) == ["a1", "a5"]
    mix([str(tmp_path / "s" / "train"), str(tmp_path / "s" / "test")], str(tmp_path / "m"))
    assert sorted(m["id"] for m in meta(tmp_path / "m")) == ["a1", "a5"]


def test_sources_that_disagree(tmp_path):
    a = write(tmp_path / "a.jsonl", ROWS[:2])
    b = write(tmp_path / "b.jsonl", [{k: v for k, v in r.items() if k != "category"} for r in ROWS[2:]])
    convert([a, b], str(tmp_path / "named"), keep_columns=("id", "lang"))
    convert([a, b], str(tmp_path / "fewer"), keep_columns=("all",))  # b lacks category: null there
    assert [m["category"] for m in meta(tmp_path / "fewer")] == ["math", None, None, None]
    with pytest.raises(DataprepError, match="--keep-columns category: no column 'category'"):
        convert([a, b], str(tmp_path / "missing"), keep_columns=("id", "category"))
    with pytest.raises(DataprepError, match="column 'category' appears in a later source"):
        convert([b, a], str(tmp_path / "more"), keep_columns=("all",))
    c = write(tmp_path / "c.jsonl", [{**ROWS[0], "id": 7}])
    convert([a, c], str(tmp_path / "casts"), keep_columns=("id",))  # an int where the first had strings
    assert [m["id"] for m in meta(tmp_path / "casts")] == ["a1", "7"]
    d = write(tmp_path / "d.jsonl", [{**ROWS[0], "id": [1, 2]}])
    with pytest.raises(DataprepError, match=r"column 'id' is List\(Int64\) in a later source but String in the first"):
        convert([a, d], str(tmp_path / "types"), keep_columns=("id",))
    assert not any((tmp_path / d).exists() for d in ("missing", "more", "types"))


def test_unknown_column_is_one_line_with_no_output(tmp_path, runner):
    result = runner.invoke(cli, ["convert", write(tmp_path / "in.jsonl", ROWS), "-o", str(tmp_path / "out"),
                                 "--keep-columns", "id,nope"])
    assert result.exit_code == 1 and "Error: --keep-columns nope: no column 'nope'; columns are: id, category" \
        in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_with_a_row_fn(tmp_path):
    fn = tmp_path / "fn.py"
    fn.write_text("def row(r):\n    return {'instruction': r['instruction'], 'output': r['output'] + '!'}\n")
    convert(write(tmp_path / "in.jsonl", ROWS), str(tmp_path / "c"), row_fn=f"{fn}:row", keep_columns=("id",))
    assert [m["id"] for m in meta(tmp_path / "c")] == ["a1", "a2", "a3", "a4", "a5"]
