"""CSV/TSV: encodings detected or given, delimiters, headers, quoting, late non-UTF-8 bytes."""

from __future__ import annotations

import polars as pl
import pytest

from dataprep.sources import csv as csv_reader
from dataprep.sources import iter_batches, read_table
from tests.sources.conftest import ASSETS


def test_cp949_csv_is_detected():
    df = read_table(str(ASSETS / "ko_cp949.csv"))
    assert df.rows() == [("한국의 수도는 어디인가요?", None, "서울입니다."), ("다음 문장을 영어로 번역하세요.", "안녕하세요", "Hello.")]


def test_cp949_with_explicit_encoding_matches_detection():
    assert read_table(str(ASSETS / "ko_cp949.csv"), encoding="cp949").equals(read_table(str(ASSETS / "ko_cp949.csv")))


def test_latin1_csv_is_detected():
    assert read_table(str(ASSETS / "latin1.csv"))["text"].to_list() == ["café crème", "naïve façade"]


def test_utf8_bom_and_semicolon_delimiter():
    df = read_table(str(ASSETS / "bom_semicolon.csv"))
    assert df.columns == ["instruction", "input", "output"]
    assert df["instruction"].to_list() == ["Add 2 and 3", "Name a colour, any colour"]


def test_no_header_names_columns_from_one(tmp_path):
    p = tmp_path / "x.tsv"
    p.write_text('say "hi"\t1\nbye\t2\n')
    df = read_table(str(p), has_header=False)
    assert df.columns == ["column_1", "column_2"] and df["column_1"].to_list() == ['say "hi"', "bye"]


def test_quoting_is_off_for_tsv_unless_asked(tmp_path):
    p = tmp_path / "q.tsv"
    p.write_text('"quoted\tcell"\tx\n')
    assert read_table(str(p), has_header=False).row(0) == ('"quoted', 'cell"', "x")
    assert read_table(str(p), has_header=False, quote_char='"').row(0) == ("quoted\tcell", "x")


def test_looks_utf8_tolerates_a_cut_character():
    data = "가나다".encode()
    assert csv_reader._looks_utf8(data[:-1]) and not csv_reader._looks_utf8("가".encode("cp949") + b"abcdef")


def test_non_utf8_after_the_sniffed_sample(tmp_path):
    p = tmp_path / "late.csv"
    p.write_bytes(b"a,b\n" + b"x,y\n" * 20000 + "가,나\n".encode("cp949"))
    df = read_table(str(p))
    assert df.height == 20001 and df.row(-1) == ("가", "나")


def test_large_file_with_late_non_utf8_names_the_encoding(tmp_path, monkeypatch):
    from dataprep.errors import DataprepError

    monkeypatch.setattr(csv_reader, "FULL_UTF8_CHECK_BYTES", 1000)  # as if the file were large
    p = tmp_path / "late.csv"
    p.write_bytes(b"a,b\n" + b"x,y\n" * 20000 + "가나다라,마바사\n".encode("cp949") * 50)
    with pytest.raises(DataprepError, match="starts as UTF-8 but has other bytes further on; pass --encoding cp949"):
        list(iter_batches([str(p)], batch_rows=1000))
    assert pl.concat(list(iter_batches([str(p)], encoding="cp949")))["a"][-1] == "가나다라"
    monkeypatch.setattr(csv_reader, "FULL_UTF8_CHECK_BYTES", 64 << 20)
    assert pl.concat(list(iter_batches([str(p)])))["a"][-1] == "가나다라"
