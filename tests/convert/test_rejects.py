"""Rows that cannot become records: each reject has a reason and its source/row; in = out + rejected."""

from __future__ import annotations

import json

import polars as pl
import pytest

from dataprep.convert import convert, convert_frame, parse_labels, split_shared_prompt
from tests.conftest import REPO

ASSETS = REPO / "tests" / "assets"


def _rejects(out) -> list[dict]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]


def _frame(rows: list[dict], source: str = "mem") -> pl.DataFrame:
    from dataprep.sources import frame_from_rows

    return frame_from_rows(rows, source).with_columns(source=pl.lit(source), row=pl.int_range(pl.len(), dtype=pl.Int64))


def test_sft_rejects_with_reason_and_row(tmp_path):
    src = str(ASSETS / "sft_bad.jsonl")
    m = convert([src], tmp_path / "o", template="alpaca", fmt="jsonl")
    assert m.counts.to_json() == {"in": 7, "out": 2, "rejected": 5, "rejected_by_reason": {
        "empty instruction": 2, "non-string output": 1, "missing instruction": 1, "empty output": 1}}
    assert [(r["source"], r["row"], r["reason"]) for r in _rejects(tmp_path / "o")] == [
        (src, 1, "empty instruction"), (src, 2, "non-string output"), (src, 3, "missing instruction"),
        (src, 4, "empty instruction"), (src, 6, "empty output")]
    out = [json.loads(line) for line in (tmp_path / "o" / "records.jsonl").read_text().splitlines()]
    assert [r["row"] for r in out] == [0, 5]
    assert out[1]["prompt"].endswith("### Instruction:\nEcho\n\n### Input:\na\n\n### Response:\n")


def test_classify_unknown_label_id_and_empty_labels(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("joy\nanger\nfear\n")
    src = tmp_path / "emo.tsv"
    src.write_text("happy day\t0\nso mad\t1,0\nbad id\t7\nno label\t\nscared\tfear\n\t2\n")
    m = convert([str(src)], tmp_path / "o", kind="classify", has_header=False, label_names=str(names),
                mapping={"text": "column_1", "labels": "column_2"})
    assert m.counts.n_out == 3 and m.lineage.label_names == ["joy", "anger", "fear"]
    assert [(r["row"], r["reason"], r["detail"]) for r in _rejects(tmp_path / "o")] == [
        (2, "unknown label id", "'7'"), (3, "missing labels", None), (5, "missing text", None)]
    df = pl.read_parquet(tmp_path / "o" / "records.parquet")
    assert df["labels"].to_list() == [["joy"], ["anger", "joy"], ["fear"]]


@pytest.mark.parametrize("value, expected", [
    ("Action, Comedy,  Drama", (["Action", "Comedy", "Drama"], None)),
    (["a", "b", "a"], (["a", "b"], None)),
    ([3, 1], (["3", "1"], None)),
    (" , ", (None, "empty labels")),
    (1.5, (None, "non-string labels")),
    (None, (None, "missing labels")),
])
def test_parse_labels_without_names(value, expected):
    assert parse_labels(value) == expected


def test_parse_labels_with_names():
    names = ["joy", "anger"]
    assert parse_labels("1,0", names) == (["anger", "joy"], None)
    assert parse_labels([1, "joy"], names) == (["anger", "joy"], None)
    assert parse_labels("2", names) == (None, "unknown label id")
    assert parse_labels("calm", names) == (None, "unknown label")


def test_row_fn_exceptions_and_bad_results_become_rejects():
    def row_fn(row):
        if row["q"] == "boom":
            raise ValueError("cannot parse question")
        if row["q"] == "none":
            return None
        if row["q"] == "extra":
            return {"instruction": "x", "output": "y", "score": 1}
        return {"instruction": row["q"], "output": row["a"]}

    frame = _frame([{"q": "What?", "a": "That."}, {"q": "boom", "a": ""}, {"q": "none", "a": ""},
                    {"q": "extra", "a": ""}, {"q": "Why?", "a": ""}])
    records, rejects = convert_frame(frame, "sft", template="latex", row_fn=row_fn)
    assert records.select("instruction", "completion", "row").rows() == [("What?", " That.", 0)]
    assert [(r["row"], r["reason"], r["detail"]) for r in rejects] == [
        (1, "row-fn error: ValueError", "cannot parse question"), (2, "bad row-fn result: NoneType, not a dict", None),
        (3, "bad row-fn result: unknown field score", None), (4, "empty output", None)]


def test_chat_rejects():
    frame = _frame([
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"from": "narrator", "value": "once"}, {"from": "gpt", "value": "upon"}]},
        {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]},
        {"messages": []},
        {"messages": "[not json"},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "tools": "{bad"},
    ])
    records, rejects = convert_frame(frame, "chat")
    assert records["row"].to_list() == [0]
    assert [(r["row"], r["reason"]) for r in rejects] == [
        (1, "no assistant turn"), (2, "unknown role"), (3, "non-string message content"), (4, "empty messages"),
        (5, "messages is not valid JSON"), (6, "tools is not valid JSON")]


def test_openai_messages_pass_through_with_system_and_tools():
    msgs = [{"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "w", "arguments": "{}"}}]},
            {"role": "tool", "content": "sunny"}, {"role": "assistant", "content": "It is sunny."}]
    tools = [{"type": "function", "function": {"name": "w"}}]
    records, rejects = convert_frame(_frame([{"messages": msgs, "system": "Be brief.", "tools": tools}]), "chat")
    assert rejects == []
    rec = records.row(0, named=True)
    assert {k: v for k, v in rec["messages"][0].items() if v is not None} == {"role": "system", "content": "Be brief."}
    assert json.loads(rec["messages"][2]["tool_calls"]) == [
        {"id": None, "type": "function", "function": {"name": "w", "arguments": {}}}]
    assert rec["messages"][3]["name"] == "w"  # the tool result is named after the call it answers
    assert [m.get("role") for m in rec["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    assert json.loads(rec["tools"]) == tools


def test_openai_text_content_parts_are_joined():
    msgs = [{"role": "user", "content": [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "there"}]},
            {"role": "assistant", "content": "Hi"}]
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
             {"role": "assistant", "content": "A cat"}]
    records, rejects = convert_frame(_frame([{"messages": msgs}, {"messages": image}]), "chat")
    first = records["messages"][0].to_list()[0]
    assert (first["content"], first["parts"]) == ("Hello, there", None)
    # an image part is kept as a typed part (it was a reject before typed parts)
    assert rejects == []
    second = records["messages"][1].to_list()[0]
    assert (second["content"], json.loads(second["parts"])) == ("", [{"type": "image", "path": "x"}])


def test_preference_rejects_and_plain_columns():
    frame = _frame([
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": "2+2?", "chosen": "4", "rejected": "4"},
        {"prompt": "2+2?", "chosen": "", "rejected": "5"},
        {"prompt": "2+2?", "chosen": 4, "rejected": "5"},
        {"prompt": "Add", "input": "2 and 2", "chosen": "4", "rejected": "22", "system": "Be exact."},
    ])
    records, rejects = convert_frame(frame, "preference")
    assert records.select("prompt", "chosen", "rejected").rows() == [("2+2?", "4", "5"), ("Add\n2 and 2", "4", "22")]
    assert records["messages"][0].to_list() == [{"role": "user", "content": "2+2?"}]
    assert records["messages"][1].to_list() == [{"role": "system", "content": "Be exact."},
                                                {"role": "user", "content": "Add\n2 and 2"}]
    assert [(r["row"], r["reason"]) for r in rejects] == [
        (1, "chosen equals rejected"), (2, "empty chosen"), (3, "non-string chosen")]


def test_full_transcripts_share_their_prompt():
    hh_chosen = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a fruit.\n\nAssistant: An apple."
    hh_rejected = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a fruit.\n\nAssistant: A carrot."
    messages, chosen, rejected = split_shared_prompt(hh_chosen, hh_rejected)
    assert messages == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                        {"role": "user", "content": "Name a fruit."}]
    assert (chosen, rejected) == ("An apple.", "A carrot.")  # a shared first letter "A" stays in the answers
    turns = [{"role": "user", "content": "Hi"}]
    frame = _frame([{"chosen": turns + [{"role": "assistant", "content": "Hello"}],
                     "rejected": turns + [{"role": "assistant", "content": "Go away"}]},
                    {"chosen": hh_chosen, "rejected": hh_rejected}])
    records, rejects = convert_frame(frame, "preference")
    assert rejects == []
    assert records.select("prompt", "chosen", "rejected").rows() == [
        ("Hi", "Hello", "Go away"), ("Name a fruit.", "An apple.", "A carrot.")]


def test_capitalised_roles_are_normalised(tmp_path):
    rows = [{"messages": [{"role": "USER", "content": "Hi"}, {"role": "Assistant", "content": "Hello"}]},
            {"conversations": [{"from": "Human", "value": "Hi"}, {"from": "GPT", "value": "Yo"}]}]
    for i, row in enumerate(rows):
        (tmp_path / f"{i}.jsonl").write_text(json.dumps(row) + "\n")
        m = convert([str(tmp_path / f"{i}.jsonl")], tmp_path / f"o{i}", kind="chat")
        assert m.counts.n_out == 1, m.counts
        messages = pl.read_parquet(tmp_path / f"o{i}" / "records.parquet")["messages"].to_list()[0]
        assert [x["role"] for x in messages] == ["user", "assistant"]


def test_unusual_but_valid_input_loses_nothing(tmp_path):
    """Each of these lost rows or content, or stopped the run, before: now every row is accounted for."""
    cases = {
        # U+2028 inside a JSON string is valid JSON (json.dumps writes it with ensure_ascii=False)
        "sep.jsonl": (json.dumps({"instruction": "a\u2028b\u0085c", "output": "x"}, ensure_ascii=False) + "\n", "sft"),
        # LLaMA-Factory v1 text parts are keyed `value`
        "parts.jsonl": (json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "value": "hi"}]},
                                                 {"role": "assistant", "content": [{"type": "text", "value": "yo"}]}]}) + "\n",
                        "chat"),
        # one lone surrogate is one rejected row, not a failed run
        "surrogate.jsonl": ('{"instruction": "a\\ud800b", "output": "x"}\n{"instruction": "ok", "output": "y"}\n', "sft"),
        # a header naming a column twice keeps both; a user's own source/row columns are kept aside
        "dup.csv": ("instruction,output,output\na,b,c\n", "sft"),
        "own.jsonl": (json.dumps({"instruction": "a", "output": "b", "source": "mine", "row": 7}) + "\n", "sft"),
    }
    results = {}
    for name, (text, kind) in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        m = convert([str(tmp_path / name)], tmp_path / f"o-{name}", kind=kind)
        results[name] = (m.counts.to_json()["in"], m.counts.n_out, m.counts.by_reason, m.get("ignored_columns"))
        frame = pl.read_parquet(tmp_path / f"o-{name}" / "records.parquet")
        if name == "surrogate.jsonl":
            assert frame["row"].to_list() == [1]
        if name == "sep.jsonl":
            assert frame["instruction"].to_list() == ["a\u2028b\u0085c"]
        if name == "parts.jsonl":
            assert [x["content"] for x in frame["messages"].to_list()[0]] == ["hi", "yo"]
    assert results == {
        "sep.jsonl": (1, 1, {}, []),
        "parts.jsonl": (1, 1, {}, []),
        "surrogate.jsonl": (2, 1, {"invalid unicode (a lone surrogate)": 1}, []),
        "dup.csv": (1, 1, {}, ["output_2"]),
        "own.jsonl": (1, 1, {}, ["input_source", "input_row"]),
    }


def test_text_files_split_lines_at_newlines_only(tmp_path):
    (tmp_path / "t.txt").write_text("one\u2028still one\x0cstill\r\ntwo\n", encoding="utf-8")
    convert([str(tmp_path / "t.txt")], tmp_path / "o", kind="text")
    frame = pl.read_parquet(tmp_path / "o" / "records.parquet")
    assert frame.select("text", "row").rows() == [("one\u2028still one\x0cstill", 0), ("two", 1)]


def test_deeply_nested_json_is_one_line_error(tmp_path, runner):
    from dataprep.cli import cli

    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    result = runner.invoke(cli, ["convert", str(tmp_path / "deep.json"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "nests JSON deeper than the parser allows" in result.output and not (tmp_path / "o").exists()


def test_a_label_column_on_chat_data_is_a_question_not_a_silent_drop(tmp_path):
    from dataprep.errors import DataprepError

    row = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "label": False}
    (tmp_path / "kto.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(DataprepError, match=r"column 'label' looks like per-row labels .* --ignore-columns label"):
        convert([str(tmp_path / "kto.jsonl")], tmp_path / "o", kind="chat")
    assert not (tmp_path / "o").exists()
    m = convert([str(tmp_path / "kto.jsonl")], tmp_path / "o", kind="chat", ignore_columns=("label",))
    assert m.counts.n_out == 1 and m.get("ignored_columns") == ["label"]


def test_a_lone_surrogate_inside_a_conversation_rejects_that_row_only(tmp_path):
    good = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}'
    bad = '{"messages": [{"role": "user", "content": "a\\ud800"}, {"role": "assistant", "content": "yo"}]}'
    (tmp_path / "c.jsonl").write_text("\n".join([good, bad, good]) + "\n")
    m = convert([str(tmp_path / "c.jsonl")], tmp_path / "o", kind="chat")
    assert m.counts.to_json() == {"in": 3, "out": 2, "rejected": 1,
                                  "rejected_by_reason": {"invalid unicode (a lone surrogate)": 1}}
    assert pl.read_parquet(tmp_path / "o" / "records.parquet")["row"].to_list() == [0, 2]
