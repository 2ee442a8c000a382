"""The filter stage: each family on fixed rows with exact counts and reasons, dry run, bad options,
PII on the labelled fixture, and convert → filter → tokenize."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from dataprep.cli import cli
from dataprep.errors import DataprepError
from dataprep.filter import filter as run_filter
from dataprep.filter.pii import find_pii, redact

FIXTURE = Path(__file__).resolve().parents[1] / "assets" / "pii_fixture.jsonl"
ROWS = [
    {"instruction": "세 가지 기본 색은 무엇인가요?", "input": "", "output": "기본 색은 빨강, 파랑, 노랑입니다. 이 세 가지 색을 섞으면 다른 색을 만들 수 있습니다."},
    {"instruction": "Name three primary colors please.", "input": "", "output": "The primary colors are red, blue and yellow; mixing them gives the others."},
    {"instruction": "연락처를 알려주세요.", "input": "", "output": "제 번호는 010-1234-5678이고 이메일은 kim@example.com입니다."},
    {"instruction": "Describe your favourite holiday in a few words.", "input": "", "output": "As an AI language model, I do not have holidays."},
    {"instruction": "빈 답", "input": "", "output": "   "},
    {"instruction": "Say hi", "input": "", "output": "hi"},
]


def write_rows(tmp_path: Path, rows=ROWS) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({**r, "source": "t", "row": i}, ensure_ascii=False) + "\n"
                            for i, r in enumerate(rows)), encoding="utf-8")
    return path


def test_length(tmp_path):
    m = run_filter(write_rows(tmp_path), tmp_path / "out", min_chars=("answer=3",))
    assert m.counts.n_out == 5 and m.counts.by_reason == {"length: answer chars < 3": 1}  # "hi"; "   " is 3 chars
    removed = pl.read_parquet(tmp_path / "out" / "removed.parquet")
    assert removed["filter_score"].to_list() == [2.0] and removed["row"].to_list() == [5]


def test_language_per_field(tmp_path):
    m = run_filter(write_rows(tmp_path), tmp_path / "out", lang=("ko",), lang_min_chars=10)
    assert m.counts.by_reason == {"language: prompt not ko": 2}  # rows 1 and 3; short prompts are not judged
    removed = pl.read_parquet(tmp_path / "out" / "removed.parquet")
    assert removed["row"].to_list() == [1, 3] and removed["filter_detail"].str.starts_with("prompt: en").all()
    mixed = [{"instruction": "다음 문장을 영어로 번역하세요: 오늘은 날씨가 정말 좋습니다.", "input": "",
              "output": "The weather is really nice today, so let us go for a walk."}]
    path = write_rows(tmp_path, mixed)
    assert run_filter(path, tmp_path / "same", lang=("ko",), allow_empty=True).counts.by_reason == {
        "language: answer not ko": 1}
    assert run_filter(path, tmp_path / "per", lang=("prompt=ko", "answer=en+ko")).counts.n_out == 1


def test_tokens(tmp_path):
    m = run_filter(write_rows(tmp_path), tmp_path / "out", min_tokens=("answer=3",), tokenizer="smollm2-135m")
    assert m.counts.by_reason == {"length: answer tokens < 3": 2}
    with pytest.raises(DataprepError, match="need --tokenizer"):
        run_filter(write_rows(tmp_path), tmp_path / "o2", max_tokens=("10",))


def test_recipe_section(tmp_path):
    from dataprep.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("convert:\n  input: x.json\nfilter:\n  lang: [ko]\n  quality: true\ntokenize:\n  tokenizer: t\n")
    assert dict(load_recipe(path).stage("filter").options) == {"lang": ["ko"], "quality": True}
    path.write_text("convert:\n  input: x.json\nfilter:\n  lang_threshold: 3\n")
    with pytest.raises(DataprepError, match=r"r.yaml:4: filter.lang_threshold: 3 is out of range"):
        load_recipe(path)


def test_pii_modes(tmp_path):
    path = write_rows(tmp_path)
    m = run_filter(path, tmp_path / "drop", pii="drop")
    assert m.counts.by_reason == {"pii: phone": 1}
    run_filter(path, tmp_path / "redact", pii="redact")
    out = pl.read_parquet(tmp_path / "redact" / "records.parquet")["output"].to_list()
    assert out[2] == "제 번호는 [PHONE]이고 이메일은 [EMAIL]입니다."
    run_filter(path, tmp_path / "flag", pii="flag")
    assert pl.read_parquet(tmp_path / "flag" / "records.parquet")["pii"].to_list()[2] == "phone,email"


def test_quality_and_order(tmp_path):
    m = run_filter(write_rows(tmp_path), tmp_path / "out", quality=True, min_chars=("answer=3",))
    assert m.counts.by_reason == {"length: answer chars < 3": 1, "quality: empty answer": 1, "quality: refusal": 1}
    assert (tmp_path / "out" / "report.html").read_text().count("<h2>") == 2


def test_dry_run_annotates(tmp_path):
    m = run_filter(write_rows(tmp_path), tmp_path / "out", quality=True, dry_run=True)
    assert m.counts.n_out == 6 and m.get("would_remove") == {"quality: empty answer": 1, "quality: refusal": 1}
    rows = pl.read_parquet(tmp_path / "out" / "records.parquet")
    assert rows["filter_reason"].to_list() == [None, None, None, "refusal", "empty answer", None]


def test_pii_fixture_precision_recall():
    tp = fp = fn = 0
    for line in FIXTURE.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        gold, got = {tuple(s) for s in r["spans"]}, set(find_pii(r["text"]))
        tp, fp, fn = tp + len(gold & got), fp + len(got - gold), fn + len(gold - got)
    assert tp / (tp + fp) >= 0.95 and tp / (tp + fn) >= 0.9
    assert redact("a 900101-1234568 b", find_pii("a 900101-1234568 b")) == "a [RRN] b"
    assert find_pii("card 4111 1111 1111 1112") == []  # Luhn fails


@pytest.mark.parametrize("args, message", [
    ([], "no filter enabled"),
    (["--lang", "xx"], "unknown language code"),
    (["--lang-threshold", "1.5", "--lang", "ko"], "1.5"),
    (["--min-chars", "answer=abc"], "expected N or FIELD=N"),
    (["--min-chars", "nope=3"], "not in the input"),
])
def test_bad_options(tmp_path, runner, args, message):
    result = runner.invoke(cli, ["filter", str(write_rows(tmp_path)), "-o", str(tmp_path / "out"), *args])
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / "out").exists()


def test_library_errors(tmp_path):
    with pytest.raises(DataprepError, match="lang_threshold"):
        run_filter(write_rows(tmp_path), tmp_path / "o", lang=("ko",), lang_threshold=2.0)
    assert not (tmp_path / "o").exists()


def test_convert_filter_tokenize(tmp_path, shared_data):
    from dataprep.convert import convert
    from dataprep.tokenize import tokenize

    convert(str(shared_data / "ko_alpaca_1040.json"), tmp_path / "c", template="ko-alpaca")
    f = run_filter(tmp_path / "c", tmp_path / "f", lang=("ko",), quality=True, pii="redact")
    assert f.counts.n_in == 1040 and f.lineage.kind == "sft"
    t = tokenize(tmp_path / "f", tmp_path / "t", tokenizer="smollm2-135m", max_len=256)
    assert t.counts.n_in == f.counts.n_out
    assert [u["stage"] for u in t.lineage.upstream] == ["convert", "filter"]
