"""The package's face: read_table reads every format alike; iter_batches keeps source and row
across sources and batches, and its batches add up to each source read whole."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from dataprep.sources import iter_batches, read_table
from tests.sources.conftest import ASSETS, ROWS


@pytest.mark.parametrize("name", ["d.json", "d.jsonl", "d.json.gz", "d.jsonl.gz", "d.parquet", "d.csv.gz"])
def test_each_format_reads_the_same_rows(tmp_path, name):
    p = tmp_path / name
    if name.startswith("d.parquet"):
        pl.DataFrame(ROWS).write_parquet(p)
    else:
        text = (json.dumps(ROWS) if ".json." in name or name.endswith(".json")
                else "".join(json.dumps(r) + "\n" for r in ROWS) if "jsonl" in name
                else "instruction,input,output\nAdd 1 and 1,,2\nSpell cat,,c-a-t\n")
        p.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    df = read_table(str(p))
    assert df.select("instruction", "output").rows() == [("Add 1 and 1", "2"), ("Spell cat", "c-a-t")]


def test_several_sources_keep_source_and_row(tmp_path, shared_data):
    a = str(shared_data / "english_to_latex.csv")
    b = tmp_path / "more.jsonl"
    b.write_text(json.dumps({"English": "x squared", "LaTeX": "x^2", "note": "extra column"}) + "\n")
    df = pl.concat(iter_batches([a, str(b)]), how="diagonal")
    assert df.height == 51
    assert df.select("source", "row").rows()[49:] == [(a, 49), (str(b), 0)]
    assert df["note"].to_list()[-2:] == [None, "extra column"]


def _whole(paths: list[str]) -> pl.DataFrame:
    """Each source read whole by read_table, with the provenance columns iter_batches adds."""
    return pl.concat([read_table(p).with_columns(source=pl.lit(p), row=pl.int_range(pl.len(), dtype=pl.Int64))
                      for p in paths])


def test_iter_batches_matches_read_table(tmp_path, shared_data):
    parquet = tmp_path / "a.parquet"
    pl.read_csv(shared_data / "english_to_latex.csv").write_parquet(parquet)
    srcs = [str(shared_data / "english_to_latex.csv"), str(parquet), str(ASSETS / "ko_cp949.csv")]
    batches = list(iter_batches(srcs[:2], batch_rows=16))
    assert [b.height for b in batches] == [16, 16, 16, 2, 16, 16, 16, 2]
    assert pl.concat(batches).equals(_whole(srcs[:2]))
    assert pl.concat(list(iter_batches(srcs[2:], batch_rows=1))).equals(_whole(srcs[2:]))
