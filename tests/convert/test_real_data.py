"""convert on the real public data in ../shared/data: row counts and exact rendered records."""

from __future__ import annotations

import json

import polars as pl

from dataprep.convert import convert
from dataprep.templates import ALPACA_NO_INPUT, ALPACA_WITH_INPUT
from tests.conftest import REPO


def _records(out) -> pl.DataFrame:
    return pl.read_parquet(out / "records.parquet")


def test_alpaca_en_with_and_without_input(shared_data, tmp_path):
    src = shared_data / "alpaca_en_demo.json"
    m = convert([str(src)], tmp_path / "o", template="alpaca")
    assert m.counts.to_json() == {"in": 999, "out": 999, "rejected": 0, "rejected_by_reason": {}}
    df = _records(tmp_path / "o")
    assert df.columns == ["instruction", "input", "output", "prompt", "completion", "source", "row"]
    raw = json.loads(src.read_text())
    first = df.row(0, named=True)
    assert first.get("prompt") == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nDescribe a process of making crepes.\n\n### Response:\n"
    )
    assert first.get("completion") == raw[0]["output"] and first.get("row") == 0 and first.get("source") == str(src)
    i = next(i for i, r in enumerate(raw) if r["input"])
    rec = df.row(i, named=True)
    assert rec["row"] == i
    assert rec["prompt"] == ALPACA_WITH_INPUT.format(instruction=raw[i]["instruction"], input=raw[i]["input"])
    assert rec["prompt"].endswith(f"### Input:\n{raw[i]['input']}\n\n### Response:\n")
    assert df.filter(pl.col("input") != "").height == 412
    assert df["prompt"].str.starts_with(ALPACA_NO_INPUT[:40]).sum() == 999


def test_ko_alpaca_exact_prompts(shared_data, tmp_path):
    src = shared_data / "ko_alpaca_1040.json"
    m = convert([str(src)], tmp_path / "o", template="ko-alpaca")
    assert m.counts.n_in == m.counts.n_out == 1040
    df = _records(tmp_path / "o")
    raw = json.loads(src.read_text())
    assert df.row(0, named=True)["prompt"] == (
        "아래는 문제를 설명하는 지시사항입니다. 이 요청에 대해 적절하게 답변해주세요.\n"
        "###지시사항:건강을 유지하기 위한 세 가지 팁을 알려주세요.\n###답변:"
    )
    i = next(i for i, r in enumerate(raw) if r["input"])
    assert df.row(i, named=True)["prompt"] == (
        "아래는 문제를 설명하는 지시사항과, 구체적인 답변을 방식을 요구하는 입력이 함께 있는 문장입니다. "
        f"이 요청에 대해 적절하게 답변해주세요.\n###입력:{raw[i]['input']}\n###지시사항:{raw[i]['instruction']}\n###답변:"
    )
    assert df["completion"].to_list() == [r["output"] for r in raw]


def test_english_to_latex(shared_data, tmp_path):
    m = convert([str(shared_data / "english_to_latex.csv")], tmp_path / "o", template="latex")
    assert m.counts.n_out == 50
    rec = _records(tmp_path / "o").row(0, named=True)
    assert rec["prompt"] == "Convert English to LaTeX\nEnglish: integral from a to b of x squared\nLaTeX:"
    assert rec["completion"] == " \\int_{a}^{b} x^2 \\,dx"
    assert rec["output"] == "\\int_{a}^{b} x^2 \\,dx"
    assert m.get("length_stats")["prompt"]["min"] == len("Convert English to LaTeX\nEnglish: \nLaTeX:") + min(
        len(e) for e in pl.read_csv(shared_data / "english_to_latex.csv")["English"])


def test_anime_genres_as_classify(shared_data, tmp_path):
    m = convert([str(shared_data / "anime_with_synopsis.csv")], tmp_path / "o", kind="classify",
                mapping={"text": "synopsis", "labels": "Genres"})
    assert m.counts.n_out == 269 and m.lineage.kind == "classify"
    assert len(m.lineage.label_names) == 40 and m.lineage.label_names == sorted(m.lineage.label_names)
    rec = _records(tmp_path / "o").row(0, named=True)
    assert rec["labels"] == ["Action", "Adventure", "Comedy", "Drama", "Sci-Fi", "Space"]
    assert rec["text"].startswith("In the year 2071, humanity has colonized")


def test_goemotions_ids_with_names_file(shared_data, tmp_path):
    names = shared_data / "goemotions" / "emotions.txt"
    src = shared_data / "goemotions" / "train.tsv"
    m = convert([str(src)], tmp_path / "o", kind="classify", has_header=False, label_names=str(names),
                mapping={"text": "column_1", "labels": "column_2"})
    assert m.counts.to_json() == {"in": 43410, "out": 43410, "rejected": 0, "rejected_by_reason": {}}
    assert m.lineage.label_names == names.read_text().split()
    col = [line.split("\t")[1].split(",") for line in src.read_text(encoding="utf-8").splitlines()]
    assert m.get("label_counts")["neutral"] == sum("27" in ids for ids in col)
    assert m.get("label_counts")["grief"] == sum("16" in ids for ids in col)
    df = _records(tmp_path / "o")
    lines = src.read_text(encoding="utf-8").splitlines()
    assert df["labels"][0].to_list() == ["neutral"]  # id 27
    assert df.row(2, named=True)["labels"] == ["anger"]  # id 2
    # TSV has no quoting: a text with quotes comes through verbatim
    i = next(i for i, line in enumerate(lines) if line.startswith('"'))
    assert df.row(i, named=True)["text"] == lines[i].split("\t")[0]
    multi = next(i for i, line in enumerate(lines) if "," in line.split("\t")[1])
    ids = [int(x) for x in lines[multi].split("\t")[1].split(",")]
    assert df.row(multi, named=True)["labels"] == [m.lineage.label_names[x] for x in ids]


def test_dpo_pairs_as_preference(shared_data, tmp_path):
    src = shared_data / "dpo_en_demo.json"
    m = convert([str(src)], tmp_path / "o", kind="preference")
    assert m.counts.n_out == 300
    df = _records(tmp_path / "o")
    raw = json.loads(src.read_text())
    rec = df.row(0, named=True)
    assert rec["prompt"] == raw[0]["conversations"][0]["value"]
    assert rec["messages"] == [{"role": "user", "content": raw[0]["conversations"][0]["value"]}]
    assert rec["chosen"] == raw[0]["chosen"]["value"] and rec["rejected"] == raw[0]["rejected"]["value"]
    i = next(i for i, r in enumerate(raw) if len(r["conversations"]) == 5)
    rec = df.row(i, named=True)
    assert [t["role"] for t in rec["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert rec["prompt"] == raw[i]["conversations"][4]["value"]


def test_glaive_toolcalls_as_chat(shared_data, tmp_path):
    src = shared_data / "glaive_toolcall_en_demo.json"
    m = convert([str(src)], tmp_path / "o", kind="chat")
    assert m.counts.n_out == 300
    raw = json.loads(src.read_text())
    rec = _records(tmp_path / "o").row(0, named=True)
    roles = {"human": "user", "gpt": "assistant", "function_call": "assistant", "observation": "tool"}
    assert [t["role"] for t in rec["messages"]] == [roles[t["from"]] for t in raw[0]["conversations"]]
    assert [t["role"] for t in rec["messages"]][:6] == ["user", "assistant", "user", "assistant", "tool", "assistant"]
    # function_call turns become structured tool calls (arguments parsed), observations named tool results
    plain = [t["value"] for t in raw[0]["conversations"] if t["from"] != "function_call"]
    assert [t["content"] for t in rec["messages"] if not t["tool_calls"]] == plain
    call = json.loads(raw[0]["conversations"][3]["value"])
    assert rec["messages"][3]["content"] == ""
    assert json.loads(rec["messages"][3]["tool_calls"]) == [
        {"id": None, "type": "function", "function": {"name": "search_recipes", "arguments": call["arguments"]}}]
    assert rec["messages"][4]["name"] == "search_recipes"
    assert rec["tools"] == raw[0]["tools"]
    turns = sorted(len(r["conversations"]) for r in raw)
    assert m.get("length_stats")["turns"]["min"] == turns[0] and m.get("length_stats")["turns"]["max"] == turns[-1]


def test_demo_data_has_the_documented_duplicates(tmp_path):
    m = convert([str(REPO / "recipes" / "data" / "demo_latex.csv")], tmp_path / "o", template="latex")
    assert m.counts.n_out == 62
    df = _records(tmp_path / "o")
    eng = df["instruction"].to_list()
    for dup, orig in [(52, 0), (53, 8), (54, 30)]:
        assert df.row(dup)[:3] == df.row(orig)[:3]
    assert eng[55].lower() == eng[0] and eng[57].lower() == eng[9]
    assert " ".join(eng[56].split()) == eng[1]
    assert len(set(eng[:52])) == 52
