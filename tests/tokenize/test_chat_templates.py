"""Chat masks token by token under real chat templates of popular families (the Jinja files trl
ships in trl/chat_templates: qwen3, qwen2_5, qwen2_5_vl, llama3_1, gptoss), rendered with the
packaged SmolLM2 tokenizer, each family's markers added as special tokens so every marker is one
token. Plus the fidelity check catching a planted mismatch."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from dataprep.errors import DataprepError
from dataprep.records import IGNORE_INDEX as M
from dataprep.tokenize.masks import Specials
from dataprep.tokenize.rows import TokenizeOptions, arrow_batch, tokenize_batch
from tests.tokenize.test_masks_and_stage import trained_runs

trl = pytest.importorskip("trl")
TEMPLATES = Path(trl.__file__).parent / "chat_templates"
SP = Specials(2, 0, "<|endoftext|>", "existing special token")
MARKERS = {
    "qwen3": ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"],
    "qwen2_5": ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"],
    "qwen2_5_vl": ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
    "llama3_1": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>"],
    "gptoss": ["<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|return|>", "<|call|>", "<|constrain|>"],
}


@pytest.fixture(scope="module")
def smol():
    from dataprep.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="module")
def family(smol):
    cache = {}

    def get(name):
        if name not in cache:
            tok = copy.deepcopy(smol)
            tok.add_special_tokens({"additional_special_tokens": MARKERS[name]})
            tok.chat_template = (TEMPLATES / f"{name}.jinja").read_text()
            cache[name] = tok
        return cache[name]

    return get


def msg(role, content="", **fields):
    return {"role": role, "content": content, "parts": None, "reasoning_content": None, "tool_calls": None,
            "tool_call_id": None, "name": None, "train": None, **fields}


REASONED = [msg("user", "What is 2+3?"), msg("assistant", "5", reasoning_content="Add 2 and 3."),
            msg("user", "And 4+4?"), msg("assistant", "8", reasoning_content="Add 4 and 4.")]
CALL = json.dumps([{"id": "c1", "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}])
TOOLS = json.dumps([{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                                       "parameters": {"type": "object",
                                                                      "properties": {"city": {"type": "string"}}}}}])
TOOL_ROW = [msg("user", "Weather in Paris?"), msg("assistant", "", tool_calls=CALL),
            msg("tool", "sunny", tool_call_id="c1", name="get_weather"), msg("assistant", "It is sunny.")]
PLAIN = [msg("user", "Hi"), msg("assistant", "Hello!")]


def run(tok, rows, tools=None, kept=None, **options):
    batch = {"messages": rows, "tools": tools or [None] * len(rows), "source": ["t"] * len(rows),
             "row": list(range(len(rows)))}
    return tokenize_batch(batch, tok, "chat", TokenizeOptions(**options), SP, kept=kept)


def tokens(tok, ids, labels):
    """(token text, trained) for every token."""
    return [(tok.decode([t]), lab != M) for t, lab in zip(ids, labels, strict=True)]


def around(toks, text):
    """The (token, trained) pairs from the first token equal to `text` on."""
    at = next(i for i, (t, _) in enumerate(toks) if t == text)
    return toks[at:]


# ---------------------------------------------------------------- Qwen3: reasoning, history stripping


def test_qwen3_reasoning_trained_masked_dropped(family):
    tok = family("qwen3")
    last = [REASONED[:2]]  # one turn: nothing is stripped
    cols, rejects, ev = run(tok, last)
    assert rejects == [] and ev["fidelity.checked"] == 1 and not any(k.startswith("fidelity.mismatch") for k in ev)
    toks = tokens(tok, cols["input_ids"][0], cols["labels"][0])
    # header untrained; <think> ... </think> and the answer trained as rendered; <|im_end|> trained; "\n" after it not
    head = around(toks, "<|im_start|>")
    on = [t for t, on in toks if on]
    assert on[0] == "<think>" and on[-2:] == ["5", "<|im_end|>"]
    assert "".join(on) == "<think>\nAdd 2 and 3.\n</think>\n\n5<|im_end|>" and on[-1] == "<|im_end|>"
    assert toks[-1] == ("\n", False) and head[0] == ("<|im_start|>", False)
    assert [x for x in toks if x[0] == "istant"] == [("istant", False)]  # "ass" "istant": the header
    cols, _, _ = run(tok, last, reasoning="mask")
    assert trained_runs(tok, cols["input_ids"][0], cols["labels"][0]) == ["5<|im_end|>"]
    toks = tokens(tok, cols["input_ids"][0], cols["labels"][0])
    assert ("<think>", False) in toks and ("Add", False) in toks and ("</think>", False) in toks
    cols, _, _ = run(tok, last, reasoning="drop")
    ids = cols["input_ids"][0]
    assert "Add" not in tok.decode(ids)
    # the template inserts an empty <think>\n\n</think>\n\n into the last turn: never trained
    toks = tokens(tok, ids, cols["labels"][0])
    assert around(toks, "<think>")[:3] == [("<think>", False), ("\n\n", False), ("</think>", False)]
    assert trained_runs(tok, ids, cols["labels"][0]) == ["5<|im_end|>"]


def test_qwen3_template_inserted_empty_think_is_untrained(family):
    tok = family("qwen3")
    cols, rejects, _ = run(tok, [PLAIN])
    assert rejects == []
    toks = tokens(tok, cols["input_ids"][0], cols["labels"][0])
    assert "<think>" in [t for t, _ in toks]
    assert [t for t, on in toks if on] == ["Hello", "!", "<|im_end|>"]


def test_qwen3_history_stripping_multi_turn(family):
    tok = family("qwen3")
    # Qwen3 drops the first turn's reasoning once a later user turn follows: that turn is not in the
    # conversation as the model generated it, so the row is a fidelity mismatch by default ...
    cols, rejects, ev = run(tok, [REASONED])
    assert [r["reason"] for r in rejects] == ["fidelity: history_rewritten"] and cols["input_ids"] == []
    assert ev["fidelity.mismatch.history_rewritten"] == 1
    # ... --split-turns trains it in a sequence of its own, as generated; the extra sequence is counted
    cols, rejects, ev = run(tok, [REASONED], split_turns=True)
    assert rejects == [] and ev["split_turns"] == 1 and ev["split_turn_tokens"] == len(cols["input_ids"][1])
    full, first = (trained_runs(tok, i, lab) for i, lab in zip(cols["input_ids"], cols["labels"], strict=True))
    assert full == ["<think>\nAdd 4 and 4.\n</think>\n\n8<|im_end|>"]
    assert first == ["<think>\nAdd 2 and 3.\n</think>\n\n5<|im_end|>"]
    assert "Add 2 and 3." not in tok.decode(cols["input_ids"][0])  # stripped from the history, as the template does
    # --train-on last-assistant needs no split
    cols, rejects, _ = run(tok, [REASONED], train_on="last-assistant")
    assert rejects == [] and len(cols["input_ids"]) == 1
    # --on-mismatch warn keeps the row, the rewritten turn untrained, and counts it
    kept = []
    cols, rejects, ev = run(tok, [REASONED], kept=kept, on_mismatch="warn")
    assert rejects == [] and ev["fidelity.mismatch.history_rewritten"] == 1
    assert trained_runs(tok, cols["input_ids"][0], cols["labels"][0]) == ["<think>\nAdd 4 and 4.\n</think>\n\n8<|im_end|>"]
    assert [(k["reasons"], k["detail"]) for k in kept] == [  # listed for inspect, with its turn
        (["history_rewritten"], "assistant turn 1: history_rewritten")]


def test_qwen3_tool_call_trained_as_rendered_tool_result_untrained(family):
    tok = family("qwen3")
    cols, rejects, _ = run(tok, [TOOL_ROW], [TOOLS], split_turns=True)
    assert rejects == []
    call_seq = cols["input_ids"][1], cols["labels"][1]  # the call turn, as generated (after an empty think)
    assert trained_runs(tok, *call_seq) == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>']
    toks = tokens(tok, cols["input_ids"][0], cols["labels"][0])
    assert ("<tool_response>", False) in toks and ("</tool_response>", False) in toks
    assert trained_runs(tok, cols["input_ids"][0], cols["labels"][0]) == ["It is sunny.<|im_end|>"]


# ---------------------------------------------------------------- Qwen2.5: tool calls, reasoning it does not render


def test_qwen25_tool_calls_and_results(family):
    tok = family("qwen2_5")
    cols, rejects, ev = run(tok, [TOOL_ROW], [TOOLS])
    assert rejects == [] and ev["fidelity.checked"] == 2
    ids, labels = cols["input_ids"][0], cols["labels"][0]
    assert trained_runs(tok, ids, labels) == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>',
        "It is sunny.<|im_end|>"]
    text = tok.decode(ids)
    assert '"name": "get_weather", "description": "Weather now"' in text  # the schema is in the system turn
    toks = tokens(tok, ids, labels)
    assert all(not on for t, on in toks if t in ("<tool_response>", "</tool_response>"))
    # the template writes "<|im_start|>assistant" then "\n<tool_call>": the header stays untrained
    assert [on for t, on in toks if t == "istant"] == [False, False]


def test_qwen25_drops_reasoning_reject_or_drop(family):
    tok = family("qwen2_5")
    cols, rejects, _ = run(tok, [REASONED])
    assert [r["reason"] for r in rejects] == ["template drops reasoning"]
    cols, rejects, _ = run(tok, [REASONED], reasoning="drop")
    assert rejects == [] and trained_runs(tok, cols["input_ids"][0], cols["labels"][0]) == ["5<|im_end|>", "8<|im_end|>"]


# ---------------------------------------------------------------- Llama 3.1: <|eot_id|>, its tool format, a real seam


def test_llama31_eot_trained_and_seam_found(family):
    tok = family("llama3_1")
    cols, rejects, ev = run(tok, [TOOL_ROW], [TOOLS])
    # SmolLM2's BPE merges "\n\n" at the end of a prompt but splits "\n" "\n" before text, so the
    # "<|end_header_id|>\n\n" seam tokenizes differently at inference: the check says so
    assert [r["reason"] for r in rejects] == ["fidelity: prompt_seam"] and ev["fidelity.mismatch.prompt_seam"] == 2
    cols, rejects, ev = run(tok, [TOOL_ROW], [TOOLS], on_mismatch="warn")
    assert rejects == []
    ids, labels = cols["input_ids"][0], cols["labels"][0]
    assert trained_runs(tok, ids, labels) == ['{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>',
                                         "It is sunny.<|eot_id|>"]
    toks = tokens(tok, ids, labels)
    assert all(not on for t, on in toks if t in ("<|start_header_id|>", "<|end_header_id|>", "ipython", "sunny"))
    assert tokens(tok, ids, labels)[-1] == ("<|eot_id|>", True)  # no EOS appended after an end-of-turn marker


# ---------------------------------------------------------------- gpt-oss: thinking channel, <|return|>


def test_gptoss_analysis_channel(family):
    tok = family("gptoss")
    one = [REASONED[:2]]
    cols, rejects, _ = run(tok, one)
    assert rejects == []
    assert trained_runs(tok, cols["input_ids"][0], cols["labels"][0]) == [
        "<|channel|>analysis<|message|>Add 2 and 3.<|end|><|start|>assistant<|channel|>final<|message|>5<|return|>"]
    cols, _, _ = run(tok, one, reasoning="mask")
    assert trained_runs(tok, cols["input_ids"][0], cols["labels"][0]) == [
        "<|start|>assistant<|channel|>final<|message|>5<|return|>"]
    # earlier turns end with <|end|> and lose their analysis: split to train them as generated
    cols, rejects, ev = run(tok, [REASONED], split_turns=True)
    assert rejects == [] and ev["split_turns"] == 1
    assert trained_runs(tok, cols["input_ids"][1], cols["labels"][1])[0].endswith("final<|message|>5<|return|>")


# ---------------------------------------------------------------- tools the template ignores, flags, media


def test_tools_ignored_by_template_rejected_or_in_system(smol):
    cols, rejects, _ = run(smol, [TOOL_ROW], [TOOLS])
    assert [r["reason"] for r in rejects] == ["template ignores tools"]
    cols, rejects, ev = run(smol, [TOOL_ROW], [TOOLS], tools_in_system=True)
    assert rejects == [] and ev["tools_in_system"] == 1
    text = smol.decode(cols["input_ids"][0])
    assert text.startswith("<|im_start|>system\nYou can call these tools")
    assert trained_runs(smol, cols["input_ids"][0], cols["labels"][0]) == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>',
        "It is sunny.<|im_end|>"]


def test_train_on_flagged(smol):
    rows = [[msg("user", "a"), msg("assistant", "b", train=False), msg("user", "c"), msg("assistant", "d", train=True)],
            PLAIN]
    cols, rejects, _ = run(smol, rows, train_on="flagged")
    assert trained_runs(smol, cols["input_ids"][0], cols["labels"][0]) == ["d<|im_end|>"]
    assert [r["reason"] for r in rejects] == ["no flagged assistant turn"]


def image_row():
    parts = json.dumps([{"type": "image", "path": "cat.jpg"}, {"type": "text", "text": "What is this?"}])
    return [msg("user", "What is this?", parts=parts), msg("assistant", "A cat.")]


def test_multimodal_placeholders_masked_and_media_column(family):
    tok = family("qwen2_5_vl")
    cols, rejects, _ = run(tok, [image_row(), PLAIN])
    assert rejects == []
    toks = tokens(tok, cols["input_ids"][0], cols["labels"][0])
    assert ("<|image_pad|>", False) in toks and ("<|vision_start|>", False) in toks
    assert trained_runs(tok, cols["input_ids"][0], cols["labels"][0]) == ["A cat.<|im_end|>"]
    assert cols["media"] == [[{"type": "image", "ref": "cat.jpg"}], []]


def test_template_without_media_is_one_line_error(smol):
    with pytest.raises(DataprepError, match="--chat-template"):
        run(smol, [image_row()])


# ---------------------------------------------------------------- the fidelity check


PLANTED = ("{% for m in messages %}{{ m['role'] }}:{{ m['content'] }}\n{% endfor %}"
           "{% if add_generation_prompt %}assistant:{% endif %}")


def test_fidelity_catches_planted_seam(smol):
    """A template whose generation prompt ends in ':' and an answer starting with '"': SmolLM2 merges
    ':"' into one token, so in training the answer's first token starts inside the prompt, while at
    inference the prompt ends with ':' alone. Without the check this row would train silently on a
    sequence the model never sees."""
    tok = copy.deepcopy(smol)
    tok.chat_template = PLANTED
    bad = [msg("user", "Quote it"), msg("assistant", '"yes"')]
    good = [msg("user", "Quote it"), msg("assistant", "yes")]
    assert ':"' in tok.convert_ids_to_tokens(tok('assistant:"yes"', add_special_tokens=False)["input_ids"])
    cols, rejects, ev = run(tok, [bad, good])
    assert [(r["row"], r["reason"]) for r in rejects] == [(0, "fidelity: prompt_seam")]
    assert ev["fidelity.checked"] == 2 and ev["fidelity.mismatch.prompt_seam"] == 1 and len(cols["input_ids"]) == 1
    kept = []
    cols, rejects, ev = run(tok, [bad, good], kept=kept, on_mismatch="warn")
    assert rejects == [] and len(cols["input_ids"]) == 2 and ev["fidelity.mismatch.prompt_seam"] == 1
    assert [(r["row"], r["reasons"]) for r in kept] == [(0, ["prompt_seam"])]  # listed, not lost
    assert arrow_batch("chat", cols).num_rows == 2  # the columns are the shard columns only


def test_stage_manifest_counts_fidelity(smol, tmp_path):
    import polars as pl
    import pyarrow as pa

    from dataprep.records import SCHEMAS
    from dataprep.tokenize import tokenize

    tpl = tmp_path / "planted.jinja"
    tpl.write_text(PLANTED)
    rows = [[msg("user", "Quote it"), msg("assistant", '"yes"')], [msg("user", "Say"), msg("assistant", "yes")]]
    d = tmp_path / "rec"
    d.mkdir()
    table = pa.table({"messages": rows, "tools": [None, None], "source": ["t", "t"], "row": [0, 1]},
                     schema=SCHEMAS["chat"])
    pl.from_arrow(table).write_parquet(d / "records.parquet")
    (d / "manifest.json").write_text(json.dumps({"stage": "convert", "lineage": {"kind": "chat"}}))
    m = tokenize(d, tmp_path / "tok", chat_template=str(tpl), progress=False)
    assert m.get("fidelity") == {"checked": 2, "mismatched": 1, "by_reason": {"prompt_seam": 1}}
    assert m.counts.by_reason == {"fidelity: prompt_seam": 1} and m.config["chat_template"] == str(tpl)
    from dataprep.inspect_shards import fidelity_report

    report = fidelity_report(tmp_path / "tok")
    assert "prompt_seam: 1" in report and "t row 0" in report
    from click.testing import CliRunner

    from dataprep.cli import cli

    result = CliRunner().invoke(cli, ["tokenize", str(d), "-o", str(tmp_path / "cli"), "--chat-template", str(tpl),
                                      "--on-mismatch", "warn"])
    assert result.exit_code == 0, result.output
    assert "fidelity: 2 checked, 1 mismatched (prompt_seam 1; kept (--on-mismatch warn);" in result.output
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path / "tok"), "--fidelity"])
    assert result.exit_code == 0 and result.output.startswith("fidelity: 2 turn(s) checked, 1 mismatched")
    assert "kept with a mismatch" not in result.output  # rejected under the default
    # kept under warn: the row is in the shards, and inspect --fidelity lists it with its reason
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path / "cli"), "--fidelity"])
    assert result.exit_code == 0, result.output
    assert "rows kept with a mismatch (1; first 1;" in result.output
    assert "  t row 0: prompt_seam: assistant turn 1: prompt_seam" in result.output


@pytest.mark.parametrize("name", ["qwen2_5", "qwen3", "llama3_1"])
def test_fidelity_probe_equals_full_encoding(family, shared_data, name):
    """The check encodes only the piece after the last added token before each seam; it must decide
    exactly as encoding the whole prompt and the whole output would."""
    from collections import Counter

    from dataprep.convert.chat import chat_record
    from dataprep.tokenize.chat import Positions, Renderer, _probe_turn, plan_row
    from dataprep.tokenize.masks import encode_batch

    tok = family(name)
    raw = json.loads((shared_data / "glaive_toolcall_en_demo.json").read_text())[:40]
    rows = [chat_record({"messages": r["conversations"], "tools": r["tools"]}) for r in raw]
    rows.append({"messages": [msg("user", "Quote it"), msg("assistant", '"yes"')], "tools": None})
    opts = TokenizeOptions(split_turns=True, on_mismatch="warn", tools_in_system=True)
    added = set(tok.added_tokens_decoder)
    decided = Counter()
    for r in rows:
        seqs, _ = plan_row(Renderer(tok), r["messages"], r["tools"], opts, Counter(), "t")
        for s in seqs:
            enc = encode_batch(tok, [s.text], False)[0]
            for t in s.turns:
                pos = Positions(enc, len(s.text), False)  # every offset read and searched
                straddles, ptext, pids, otext, oids = _probe_turn(pos, s.text, t.start, t.end, added)
                fast = straddles or encode_batch(tok, [ptext], False)[0].ids != pids or (
                    encode_batch(tok, [otext], False)[0].ids != oids)
                full_p = encode_batch(tok, [t.prompt], False)[0].ids
                full_o = encode_batch(tok, [s.text[t.start : t.end]], False)[0].ids
                j = len(full_p)
                slow = enc.ids[:j] != full_p or (j and enc.offsets[j - 1][1] > t.start) or (
                    enc.ids[j : j + len(full_o)] != full_o)
                assert bool(fast) == bool(slow), (name, s.text[t.start - 40 : t.start + 40])
                decided[bool(slow)] += 1
    assert sum(decided.values()) > 40 and (decided[False] > 0 or name == "llama3_1")


@pytest.mark.parametrize("name", ["qwen2_5", "qwen3", "llama3_1", "gptoss", "planted"])
def test_exact_offsets_path_equals_the_offsets_path(family, smol, shared_data, monkeypatch, name):
    """A byte-level BPE's renderings are encoded piece by piece without offsets (tokenize.pieces:
    positions from token byte lengths, the seam's word check by the pre-tokenizer's pattern), or whole
    and searched with char_to_token (a few lookups a turn) instead of reading every token's offsets,
    and an output piece that starts at a word boundary is not encoded again (its words are context
    free); rows, labels, rejects and fidelity counts must be the same on all three paths as when every
    offset is read and every output encoded (multi-byte characters, emoji, leading spaces and newlines,
    digits and punctuation that continue the prompt's word, a straddling seam, a byte SmolLM2 has no
    token for, split turns, truncation)."""
    import dataprep.tokenize.chat as chat
    from dataprep.convert.chat import chat_record

    if name == "planted":  # seams inside merged tokens: ':' + '"' is one token
        tok = copy.deepcopy(smol)
        tok.chat_template = PLANTED
    else:
        tok = family(name)
    assert chat.exact_offsets(tok) and chat.context_free_words(tok) and chat.piece_encoder(tok) is not None
    raw = json.loads((shared_data / "glaive_toolcall_en_demo.json").read_text())[:30]
    rows = [chat_record({"messages": r["conversations"], "tools": r["tools"]}) for r in raw]
    odd = ["  \n\nhi there", "😀 ok 😀", "데이터 준비", '"yes"', "\n", "é\u0301 x", " ", "a" * 300, "::x", "12 3",
           "\t x", "'s it", "\n\n\n", "!?", "a\x06b", "\x1c x", "don't"]
    for a, b in zip(odd, odd[1:] + odd[:1], strict=True):
        rows += [{"messages": [msg("user", f"say {a!r}"), msg("assistant", a), msg("user", "again"),
                               msg("assistant", b)], "tools": None},
                 {"messages": [msg("user", "and"), msg("assistant", b, reasoning_content="think 😀")], "tools": None}]
    batch = {"messages": [r["messages"] for r in rows], "tools": [r["tools"] for r in rows],
             "source": ["t"] * len(rows), "row": list(range(len(rows)))}
    for options in ({"split_turns": True}, {"max_len": 96}, {"reasoning": "mask"}, {}):
        options = {"tools_in_system": True, "on_mismatch": "warn", **options}
        kept = {"pieces": [], "fast": [], "slow": []}  # the rows each path keeps with a fidelity mismatch
        pieces = tokenize_batch(batch, tok, "chat", TokenizeOptions(**options), SP, kept=kept["pieces"])
        monkeypatch.setattr(chat, "piece_encoder", lambda tok: None)
        fast = tokenize_batch(batch, tok, "chat", TokenizeOptions(**options), SP, kept=kept["fast"])
        monkeypatch.setattr(chat, "exact_offsets", lambda tok: False)
        monkeypatch.setattr(chat, "context_free_words", lambda tok: False)
        slow = tokenize_batch(batch, tok, "chat", TokenizeOptions(**options), SP, kept=kept["slow"])
        monkeypatch.undo()
        assert pieces == fast == slow and len(fast[0]["input_ids"]) >= 20, options
        assert kept["pieces"] == kept["fast"] == kept["slow"], options


def test_exact_offsets_only_for_plain_byte_level_bpe(smol):
    """Offsets are exact for a byte-level BPE without normalizer, prefix space or offset trimming; a
    Metaspace (SentencePiece) tokenizer or a post-processor that trims whitespace off offsets is searched
    by its offsets."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaTokenizer, PreTrainedTokenizerFast

    from dataprep.tokenize.seam import exact_offsets

    assert exact_offsets(smol)
    assert not exact_offsets(LlamaTokenizer(vocab={"<unk>": 0, "<s>": 1, "</s>": 2, "▁": 3, "a": 4}, merges=[]))
    for trim, prefix in ((True, False), (False, True)):
        tk = Tokenizer(models.BPE(vocab={"a": 0, "Ġ": 1}, merges=[]))
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix)
        tk.post_processor = processors.ByteLevel(trim_offsets=trim)
        tk.decoder = __import__("tokenizers").decoders.ByteLevel()
        assert not exact_offsets(PreTrainedTokenizerFast(tokenizer_object=tk))
    tk = Tokenizer(models.BPE(vocab={"a": 0, "Ġ": 1}, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = __import__("tokenizers").decoders.ByteLevel()
    assert exact_offsets(PreTrainedTokenizerFast(tokenizer_object=tk))


def test_output_piece_skipped_only_at_a_word_boundary(smol):
    """The check encodes a turn's output again unless a word of the sequence starts at the seam: then
    the output (whole words up to <|im_end|>) tokenizes alone as in the sequence. After `assistant:`,
    `x y` starts a word; `😀x` continues the word `:😀` (GPT-2's regex), which BPE happens to cut at
    the seam, so it is encoded again and compared."""
    from dataprep.tokenize.chat import Positions, _probe_turn
    from dataprep.tokenize.masks import encode_batch

    added = set(smol.added_tokens_decoder)
    for content, skipped in (("x y", True), ("😀x", False), ("", True)):
        text = f"<|im_start|>user:hi<|im_end|>\n<|im_start|>assistant:{content}<|im_end|>\n"
        start = text.index("assistant:") + len("assistant:")
        end = text.rindex("<|im_end|>") + len("<|im_end|>")
        enc = encode_batch(smol, [text], False)[0]
        straddles, _, _, output, ids = _probe_turn(Positions(enc, len(text), True, free=True), text, start, end, added)
        assert not straddles and (output is None) == skipped, content
        assert encode_batch(smol, [content], False)[0].ids == ids  # what the skipped encode would have given


def test_context_free_words_only_for_look_ahead_pre_tokenizers(smol):
    """SmolLM2 (ByteLevel's GPT-2 regex) and a Qwen2/Llama-3 style Split + ByteLevel qualify; a split
    pattern with look-behind or an anchor, a merged split behaviour, or a Metaspace tokenizer do not."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from dataprep.tokenize.seam import context_free_words

    qwen = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

    def with_split(pattern, behavior="isolated"):
        tk = Tokenizer(models.BPE(vocab={"a": 0, "Ġ": 1}, merges=[]))
        tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior),
                                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tk.decoder = decoders.ByteLevel()
        return PreTrainedTokenizerFast(tokenizer_object=tk)

    assert context_free_words(smol) and context_free_words(with_split(qwen))
    assert not context_free_words(with_split(r"(?<=a)b|\s+"))
    assert not context_free_words(with_split(r"^\s+|\w+"))
    assert not context_free_words(with_split(r"\b\w+"))
    assert not context_free_words(with_split(qwen, "merged_with_previous"))
