"""convert → tokenize on the real data: chat masks with SmolLM2's template on glaive tool calls,
ko-alpaca masks, and the manifest fields train reads."""

from __future__ import annotations

import json

from datasets import load_from_disk

from dataprep.convert import convert
from dataprep.models import load_tokenizer
from dataprep.records import IGNORE_INDEX as M
from dataprep.templates import generation_template
from dataprep.tokenize import tokenize
from dataprep.tokenize.seam import FIDELITY_STRADDLE
from tests.tokenize.test_masks_and_stage import trained_runs


def test_glaive_after_convert(shared_data, tmp_path):
    src = shared_data / "glaive_toolcall_en_demo.json"
    conv = convert([str(src)], str(tmp_path / "records"), kind="chat")
    # SmolLM2's template ignores tools: those rows are rejected and counted unless --tools-in-system
    plain = tokenize(tmp_path / "records", tmp_path / "plain", max_len=16384, progress=False)
    assert plain.counts.by_reason == {"template ignores tools": 191} and plain.counts.n_out == 109
    m = tokenize(tmp_path / "records", tmp_path / "tok", max_len=16384, tools_in_system=True, progress=False)
    assert m.counts.n_in == conv.counts.n_out == m.counts.n_out + m.counts.rejected
    assert m.counts.rejected == 0 and m.lineage.kind == "chat" and m.lineage.template is None
    assert m.get("chat")["tools_in_system"] == 191 and m.get("fidelity")["mismatched"] == 0
    assert [u["stage"] for u in m.lineage.upstream] == ["convert"] and m.lineage.upstream[0]["fingerprint"] == conv.fingerprint
    import polars as pl

    records = pl.read_parquet(tmp_path / "records" / "records.parquet")
    tok = load_tokenizer("smollm2-135m")
    ds = load_from_disk(str(tmp_path / "tok"))
    assert len(ds) == records.height
    for msgs, ids, labels in zip(records["messages"].to_list(), ds["input_ids"], ds["labels"], strict=True):
        calls = [json.loads(x["tool_calls"] or "null") for x in msgs if x["role"] == "assistant"]
        expected = [x["content"] + "<|im_end|>" if not c else "<tool_call>\n" + json.dumps(
            {"name": c[0]["function"]["name"], "arguments": c[0]["function"]["arguments"]}, ensure_ascii=False)
            + "\n</tool_call><|im_end|>" for x, c in zip([x for x in msgs if x["role"] == "assistant"], calls, strict=True)]
        assert trained_runs(tok, ids, labels) == expected


def test_ko_alpaca_after_convert(shared_data, tmp_path):
    convert([str(shared_data / "ko_alpaca_1040.json")], str(tmp_path / "records"), template="ko-alpaca")
    m = tokenize(tmp_path / "records", tmp_path / "tok", max_len=4096, progress=False)
    assert m.counts.n_in == m.counts.n_out + m.counts.rejected and m.get("events") == {}
    assert m.lineage.template["name"] == "ko-alpaca"
    assert generation_template("sft", m.lineage.template).endswith("###지시사항:{prompt}\n###답변:")
    import polars as pl

    records = pl.read_parquet(tmp_path / "records" / "records.parquet")
    tok = load_tokenizer("smollm2-135m")
    ds = load_from_disk(str(tmp_path / "tok"))
    for prompt, completion, ids, labels in zip(records["prompt"], records["completion"], ds["input_ids"],
                                               ds["labels"], strict=True):
        k = next(i for i, x in enumerate(labels) if x != M)
        assert all(x == M for x in labels[:k]) and labels[k:] == ids[k:]  # one prompt block, then all trained
        assert ids[:k] == tok(prompt).input_ids  # the prompt exactly as inference tokenizes it
        assert tok.decode(ids[k:]) == completion + "<|im_end|>"  # the answer from its first character
    assert m.get("fidelity") == {"checked": 1040, "mismatched": 0, "by_reason": {}}
    # --seam joint: 182 rows whose answer starts with `"` merge it with the prompt's `:` into `:"`
    joint = tokenize(tmp_path / "records", tmp_path / "joint", max_len=4096, seam="joint", progress=False)
    assert joint.get("fidelity") == {"checked": 1040, "mismatched": 182, "by_reason": {FIDELITY_STRADDLE: 182}}
    assert joint.counts.n_out == 1040
    jd = load_from_disk(str(tmp_path / "joint"))
    untrained_first = sum(not tok.decode([t for t in labels if t != M]).startswith(c[:1])
                          for c, labels in zip(records["completion"], jd["labels"], strict=True))
    assert untrained_first == 182  # their first character is never trained under joint; 0 under inference
