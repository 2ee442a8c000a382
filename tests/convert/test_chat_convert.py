"""Chat converters keep everything: reasoning, tool calls (sharegpt function_call/observation and
OpenAI tool_calls), tool ids and names, media as typed parts (LLaMA-Factory placeholders, OpenAI
parts), trl's prompt-completion; what cannot be kept is a counted reject. Counts, exact records,
and no field lost."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from dataprep.convert import convert

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def records(out: Path) -> list[dict]:
    return pl.read_parquet(out / "records.parquet").to_dicts()


def rejects(out: Path) -> list[tuple[int, str]]:
    return [(r["row"], r["reason"]) for r in map(json.loads, (out / "rejects.jsonl").read_text().splitlines())]


def msg(role, content="", **fields):
    return {"role": role, "content": content, "parts": None, "reasoning_content": None, "tool_calls": None,
            "tool_call_id": None, "name": None, "train": None, **fields}


def test_reasoning_and_openai_tool_calls(tmp_path):
    m = convert([str(ASSETS / "chat_reasoning.jsonl")], tmp_path / "o", kind="chat", think="split")
    assert (m.counts.n_in, m.counts.n_out) == (6, 3)
    assert rejects(tmp_path / "o") == [(3, "tool call arguments are not valid JSON"),
                                       (4, "message field cannot be kept"),
                                       (5, "unclosed or misplaced <think> in assistant content")]
    recs = records(tmp_path / "o")
    assert recs[0]["messages"] == [msg("user", "What is 2+3?"), msg("assistant", "5", reasoning_content="Add 2 and 3.")]
    assert recs[1]["messages"][1] == msg("assistant", "8", reasoning_content="Add 4 and 4.")  # <think> split off
    call = [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    assert recs[2]["messages"] == [
        msg("user", "Weather?"), msg("assistant", "", reasoning_content="Need the tool.", tool_calls=json.dumps(call)),
        msg("tool", "sunny", tool_call_id="c1", name="get_weather"), msg("assistant", "It is sunny.")]
    assert json.loads(recs[2]["tools"])[0]["function"]["name"] == "get_weather"
    detail = json.loads((tmp_path / "o" / "rejects.jsonl").read_text().splitlines()[1])["detail"]
    assert detail == "audio"  # the field that could not be kept is named


def test_think_kept_as_text_by_default(tmp_path):
    m = convert([str(ASSETS / "chat_reasoning.jsonl")], tmp_path / "o", kind="chat")
    assert m.counts.n_out == 4 and "think" not in m.config  # the unclosed <think> is text too
    assert records(tmp_path / "o")[1]["messages"][1]["content"] == "<think>\nAdd 4 and 4.\n</think>\n\n8"


def test_issue_repro_reasoning_is_kept(tmp_path):
    src = tmp_path / "r.jsonl"
    src.write_text(json.dumps({"messages": [{"role": "user", "content": "What is 2+3?"},
                                            {"role": "assistant", "reasoning_content": "Add 2 and 3.",
                                             "content": "5"}]}) + "\n")
    convert([str(src)], tmp_path / "o", kind="chat")
    assert records(tmp_path / "o")[0]["messages"][1]["reasoning_content"] == "Add 2 and 3."


def test_multimodal_llamafactory_and_openai_parts(tmp_path):
    m = convert([str(ASSETS / "chat_multimodal.jsonl")], tmp_path / "o", kind="chat")
    assert (m.counts.n_in, m.counts.n_out) == (6, 4)
    assert rejects(tmp_path / "o") == [(2, "<image> placeholders and images differ"), (5, "inline media bytes")]
    recs = records(tmp_path / "o")
    assert json.loads(recs[0]["messages"][0]["parts"]) == [{"type": "image", "path": "img/cat.jpg"},
                                                           {"type": "text", "text": "What is in the picture?"}]
    assert recs[0]["messages"][0]["content"] == "What is in the picture?"
    assert [p.get("path") for p in json.loads(recs[1]["messages"][0]["parts"])] == ["img/a.jpg", "img/b.jpg", None]
    assert json.loads(recs[2]["messages"][0]["parts"])[0] == {"type": "video", "path": "clip.mp4"}
    assert json.loads(recs[3]["messages"][0]["parts"]) == [{"type": "text", "text": "Describe "},
                                                           {"type": "image", "url": "https://x.org/c.png"}]
    assert m.get("ignored_columns") == []  # images and videos were used


def test_trl_prompt_completion_flags_the_completion(tmp_path):
    src = tmp_path / "pc.jsonl"
    rows = [{"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yes?"},
                        {"role": "user", "content": "Name?"}],
             "completion": [{"role": "assistant", "content": "Bob"}]}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    convert([str(src)], tmp_path / "o", kind="chat")
    assert records(tmp_path / "o")[0]["messages"] == [
        msg("user", "Hi"), msg("assistant", "Yes?", train=False), msg("user", "Name?"), msg("assistant", "Bob", train=True)]


def test_glaive_sharegpt_tool_calls_nothing_lost(shared_data, tmp_path):
    src = shared_data / "glaive_toolcall_en_demo.json"
    m = convert([str(src)], tmp_path / "o", kind="chat")
    raw = json.loads(src.read_text())
    assert (m.counts.n_in, m.counts.n_out, m.counts.rejected) == (300, 300, 0)
    for row, rec in zip(raw, records(tmp_path / "o"), strict=True):
        turns = row["conversations"]
        assert len(rec["messages"]) == len(turns)
        for t, out in zip(turns, rec["messages"], strict=True):
            if t["from"] == "function_call":  # the call, parsed: name and arguments kept exactly
                call = json.loads(t["value"])
                args = call["arguments"] if not isinstance(call["arguments"], str) else json.loads(call["arguments"])
                assert json.loads(out["tool_calls"]) == [{"id": None, "type": "function",
                                                          "function": {"name": call["name"], "arguments": args}}]
                assert out["role"] == "assistant" and out["content"] == ""
            else:
                assert out["content"] == t["value"] and out["tool_calls"] is None
            if t["from"] == "observation":
                assert out["role"] == "tool" and out["name"]  # named after the call it answers
        assert rec["tools"] == row["tools"]


def test_pii_redacts_reasoning_and_parts_text():
    """filter --pii reads what tokenize renders: a multimodal message's text parts and the reasoning."""
    from dataprep.filter.pii import TYPES, _message_pii

    parts = json.dumps([{"type": "image", "path": "x.jpg"}, {"type": "text", "text": "mail a.b@example.com"}])
    m = msg("user", "mail a.b@example.com", parts=parts)
    out, kinds = _message_pii(m, TYPES)
    assert kinds == ["email"] and out["content"] == "mail [EMAIL]"
    assert json.loads(out["parts"])[1]["text"] == "mail [EMAIL]"
    out, kinds = _message_pii(msg("assistant", "ok", reasoning_content="call 010-1234-5678"), TYPES)
    assert kinds == ["phone"] and out["reasoning_content"] == "call [PHONE]"
