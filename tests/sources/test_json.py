"""JSON, JSON Lines and plain text: wrong types kept visible, detected encodings, one row per line."""

from __future__ import annotations

import json

import polars as pl
import pytest

from dataprep.sources import read_table
from tests.sources.conftest import ASSETS


def test_json_keeps_wrong_types_visible():
    df = read_table(str(ASSETS / "sft_bad.jsonl"))
    assert df.schema["instruction"] == pl.String and df.schema["output"] == pl.Object
    assert df["output"].to_list()[2] == 3


@pytest.mark.parametrize("encoding", [None, "euc-kr"])
def test_euc_kr_json_lines(tmp_path, encoding):
    p = tmp_path / "ko.jsonl"
    p.write_bytes("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                          for t in ["안녕하세요, 반갑습니다.", "오늘 날씨가 좋네요."]).encode("euc-kr"))
    assert read_table(str(p), encoding=encoding)["text"].to_list() == ["안녕하세요, 반갑습니다.", "오늘 날씨가 좋네요."]


def test_text_file_is_one_row_per_line(tmp_path):
    from dataprep.convert import convert

    p = tmp_path / "corpus.txt"
    p.write_text("first line, with a comma\n\nthird line\n")
    m = convert([str(p)], tmp_path / "o", kind="text")
    assert m.counts.to_json() == {"in": 3, "out": 2, "rejected": 1, "rejected_by_reason": {"empty text": 1}}
    assert pl.read_parquet(tmp_path / "o" / "records.parquet").select("text", "row").rows() == [
        ("first line, with a comma", 0), ("third line", 2)]
