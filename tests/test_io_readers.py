"""Input readers: every format, encodings, delimiters, several sources with provenance."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from dataprep.sources import csv as csv_reader
from dataprep.sources import iter_batches, read_table
from tests.conftest import REPO

ASSETS = REPO / "tests" / "assets"
ROWS = [{"instruction": "Add 1 and 1", "input": "", "output": "2"}, {"instruction": "Spell cat", "input": "", "output": "c-a-t"}]


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


def test_json_keeps_wrong_types_visible():
    df = read_table(str(ASSETS / "sft_bad.jsonl"))
    assert df.schema["instruction"] == pl.String and df.schema["output"] == pl.Object
    assert df["output"].to_list()[2] == 3


def test_several_sources_keep_source_and_row(tmp_path, shared_data):
    a = str(shared_data / "english_to_latex.csv")
    b = tmp_path / "more.jsonl"
    b.write_text(json.dumps({"English": "x squared", "LaTeX": "x^2", "note": "extra column"}) + "\n")
    df = pl.concat(iter_batches([a, str(b)]), how="diagonal")
    assert df.height == 51
    assert df.select("source", "row").rows()[49:] == [(a, 49), (str(b), 0)]
    assert df["note"].to_list()[-2:] == [None, "extra column"]


def test_datasets_directory_and_hub_share_one_path(tmp_path, monkeypatch):
    import datasets

    ds = datasets.Dataset.from_list(ROWS)
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(tmp_path / "dd")
    from_disk = read_table(str(tmp_path / "dd"))
    assert from_disk.rows() == [tuple(r.values()) for r in ROWS]
    assert read_table(str(tmp_path / "dd"), split="test").height == 1
    calls = []

    def fake_load_dataset(name, split=None):
        calls.append((name, split))
        return datasets.load_from_disk(str(tmp_path / "dd"))[split]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert pl.concat(iter_batches(["hub:me/alpaca-mini:train"])).drop("source", "row").equals(from_disk)
    assert calls == [("me/alpaca-mini", "train")]
    assert pl.concat(iter_batches(["hub:me/alpaca-mini:train"]))["source"][0] == "hub:me/alpaca-mini:train"


def test_looks_utf8_tolerates_a_cut_character():
    data = "가나다".encode()
    assert csv_reader._looks_utf8(data[:-1]) and not csv_reader._looks_utf8("가".encode("cp949") + b"abcdef")


def test_non_utf8_after_the_sniffed_sample(tmp_path):
    p = tmp_path / "late.csv"
    p.write_bytes(b"a,b\n" + b"x,y\n" * 20000 + "가,나\n".encode("cp949"))
    df = read_table(str(p))
    assert df.height == 20001 and df.row(-1) == ("가", "나")


def test_text_file_is_one_row_per_line(tmp_path):
    from dataprep.convert import convert

    p = tmp_path / "corpus.txt"
    p.write_text("first line, with a comma\n\nthird line\n")
    m = convert([str(p)], tmp_path / "o", kind="text")
    assert m["counts"] == {"in": 3, "out": 2, "rejected": 1, "rejected_by_reason": {"empty text": 1}}
    assert pl.read_parquet(tmp_path / "o" / "records.parquet").select("text", "row").rows() == [
        ("first line, with a comma", 0), ("third line", 2)]


@pytest.mark.parametrize("encoding", [None, "euc-kr"])
def test_euc_kr_json_lines(tmp_path, encoding):
    p = tmp_path / "ko.jsonl"
    p.write_bytes("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                          for t in ["안녕하세요, 반갑습니다.", "오늘 날씨가 좋네요."]).encode("euc-kr"))
    assert read_table(str(p), encoding=encoding)["text"].to_list() == ["안녕하세요, 반갑습니다.", "오늘 날씨가 좋네요."]


def test_quoting_is_off_for_tsv_unless_asked(tmp_path):
    p = tmp_path / "q.tsv"
    p.write_text('"quoted\tcell"\tx\n')
    assert read_table(str(p), has_header=False).row(0) == ('"quoted', 'cell"', "x")
    assert read_table(str(p), has_header=False, quote_char='"').row(0) == ("quoted\tcell", "x")


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


def test_record_columns_and_count_without_loading(tmp_path):
    import polars as pl

    from dataprep.io import record_columns, record_count

    frame = pl.DataFrame({"text": ["a", "b", "c"], "row": [0, 1, 2]})
    frame.write_parquet(tmp_path / "r.parquet")
    frame.write_ndjson(tmp_path / "r.jsonl")
    for name in ("r.parquet", "r.jsonl"):
        assert record_columns(tmp_path / name) == ["text", "row"] and record_count(tmp_path / name) == 3
