"""Masks token by token (real SmolLM2 tokenizer and a handmade one), truncation, EOS/pad policy,
chat spans on real glaive data, and the stage contract (shards, manifest, rejects, cache)."""

from __future__ import annotations

import json
from collections import Counter

import polars as pl
import pyarrow as pa
import pytest

from dataprep.errors import DataprepError
from dataprep.records import IGNORE_INDEX, SCHEMAS
from dataprep.stage import read_manifest
from dataprep.tokenize import (
    Specials,
    TokenizeOptions,
    choose_pad,
    fit,
    prompt_completion_ids,
    tokenize,
    tokenize_batch,
)

M = IGNORE_INDEX
ROLE = {"human": "user", "gpt": "assistant", "system": "system", "function_call": "assistant", "observation": "tool"}


@pytest.fixture(scope="module")
def smol():
    from dataprep.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="module")
def handmade():
    """A character-level BPE with one merge, `a`+`b` -> `ab`, so `ab` can straddle a boundary (no `z`)."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(["<eos>", "<pad>", "x", "a", "b", "y", "ab"])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")]))
    tok.decoder = decoders.Fuse()  # tokens joined as they are (without a decoder they are joined with spaces)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


def masked(tok, prompt, completion):
    """(tokens, labels as tokens or None) for one sft row, EOS appended."""
    (ids, k), = prompt_completion_ids(tok, [prompt], [completion], tok.eos_token_id)
    labels = [M] * k + ids[k:]
    return tok.convert_ids_to_tokens(ids), [None if x == M else tok.convert_ids_to_tokens(x) for x in labels]


# ---------------------------------------------------------------- masks, token by token


def test_handmade_straddling_token_counts_as_prompt(handmade):
    # prompt alone: [x, a]; in context: [x, ab, y] -- the prompt's tokens are not a prefix
    assert handmade("xa").input_ids == [2, 3]
    tokens, labels = masked(handmade, "xa", "by")
    assert tokens == ["x", "ab", "y", "<eos>"]
    assert labels == [None, None, "y", "<eos>"]


def test_handmade_boundary_on_token_edge(handmade):
    tokens, labels = masked(handmade, "xab", "y")
    assert tokens == ["x", "ab", "y", "<eos>"]
    assert labels == [None, None, "y", "<eos>"]


def test_korean_answer_marker_without_space(smol):
    # ###답변: then the answer directly; 답변 is 5 byte-level tokens, ':' one
    tokens, labels = masked(smol, "###답변:", "서울")
    assert tokens == ["###", "ëĭ", "µ", "ë", "³", "Ģ", ":", "ì", "Ħ", "ľ", "ì", "ļ", "¸", "<|im_end|>"]
    assert labels == [None] * 7 + ["ì", "Ħ", "ľ", "ì", "ļ", "¸", "<|im_end|>"]
    ids, _ = prompt_completion_ids(smol, ["###답변:"], ["서울"], smol.eos_token_id)[0]
    assert smol.decode(ids[7:]) == "서울<|im_end|>"


def test_korean_straddle_where_prompt_alone_tokenizes_differently(smol):
    # "###답변: " alone ends with 'Ġ'; in context the space merges with the first byte of 서 ('Ġì')
    assert smol.convert_ids_to_tokens(smol("###답변: ").input_ids)[-1] == "Ġ"
    tokens, labels = masked(smol, "###답변: ", "서울")
    assert tokens == ["###", "ëĭ", "µ", "ë", "³", "Ģ", ":", "Ġì", "Ħ", "ľ", "ì", "ļ", "¸", "<|im_end|>"]
    # the straddling 'Ġì' is prompt; the remaining bytes of 서 and all of 울 are trained
    assert labels == [None] * 8 + ["Ħ", "ľ", "ì", "ļ", "¸", "<|im_end|>"]


def test_english_straddle_trailing_space(smol):
    assert smol.convert_ids_to_tokens(smol("Answer: ").input_ids) == ["Answer", ":", "Ġ"]
    tokens, labels = masked(smol, "Answer: ", "Paris")
    assert tokens == ["Answer", ":", "ĠParis", "<|im_end|>"]
    assert labels == [None, None, None, "<|im_end|>"]


def test_latex_marker_followed_by_space_backslash(smol):
    prompt = "Convert English to LaTeX\nEnglish: one half\nLaTeX:"
    tokens, labels = masked(smol, prompt, " \\frac{1}{2}")
    assert tokens[10:] == ["La", "TeX", ":", "Ġ\\", "frac", "{", "1", "}{", "2", "}", "<|im_end|>"]
    assert labels == [None] * 13 + ["Ġ\\", "frac", "{", "1", "}{", "2", "}", "<|im_end|>"]


def test_alpaca_response_marker(smol):
    prompt = "### Instruction:\nSay hi.\n\n### Response:\n"
    tokens, labels = masked(smol, prompt, "Hello!")
    k = tokens.index("Hello")
    assert tokens[k - 3 : k] == ["ĠResponse", ":", "Ċ"]
    assert labels == [None] * k + ["Hello", "!", "<|im_end|>"]


def test_eos_not_doubled_and_kept(smol):
    (ids, k), = prompt_completion_ids(smol, ["Q:"], [" A<|im_end|>"], smol.eos_token_id)
    assert ids.count(smol.eos_token_id) == 1 and ids[-1] == smol.eos_token_id and k < len(ids)


# ---------------------------------------------------------------- pad policy, truncation


def test_pad_is_never_eos(smol):
    import copy

    tok = copy.deepcopy(smol)
    assert tok.pad_token_id == tok.eos_token_id == 2  # SmolLM2 as shipped
    sp = choose_pad(tok)
    assert (sp.pad_id, sp.pad_token, sp.eos_id, sp.pad_source) == (0, "<|endoftext|>", 2, "existing special token")


def test_pad_added_when_nothing_fits():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab={"<eos>": 0, "a": 1}, merges=[])),
                                  eos_token="<eos>", pad_token="<eos>")
    sp = choose_pad(tok)
    assert (sp.pad_token, sp.pad_id, sp.eos_id, sp.pad_source) == ("<|pad|>", 2, 0, "added (resize embeddings)")
    assert len(tok) == 3 and tok.pad_token_id == 2


def test_pad_kept_when_tokenizer_has_its_own(handmade):
    assert choose_pad(handmade) == Specials(0, 1, "<pad>", "tokenizer")


@pytest.mark.parametrize(
    ("overflow", "expected"),
    [
        # 10 tokens, 6 prompt (p0..p5), 4 completion (c0..c3), max_len 6
        ("truncate-prompt", (["p4", "p5", "c0", "c1", "c2", "c3"], 2, "truncated_prompt")),
        ("truncate", (["p0", "p1", "p2", "p3", "p4", "p5"], 6, "truncated_end")),
        ("drop", (None, None, "too_long")),
    ],
)
def test_fit_policies(overflow, expected):
    ids = [f"p{i}" for i in range(6)] + [f"c{i}" for i in range(4)]
    out, k, event = fit(ids, 6, 6, overflow)
    assert event == expected[2]
    if expected[0] is not None:
        assert (out, k) == expected[:2]


def test_fit_completion_longer_than_max_len_cuts_its_end():
    ids = [f"p{i}" for i in range(4)] + [f"c{i}" for i in range(5)]
    # the prompt keeps its last max_len // 2 tokens, the completion fills the rest
    assert fit(ids, 4, 4, "truncate-prompt") == (["p2", "p3", "c0", "c1"], 2, "truncated_completion")
    # a completion that fits exactly is kept whole, even if no prompt token is left
    assert fit(ids, 4, 5, "truncate-prompt") == (["c0", "c1", "c2", "c3", "c4"], 0, "truncated_prompt")
    assert fit(ids, 4, 6, "truncate-prompt") == (["p3", "c0", "c1", "c2", "c3", "c4"], 1, "truncated_prompt")
    assert fit(ids[3:], 1, 4, "truncate-prompt") == (["p3", "c0", "c1", "c2"], 1, "truncated_completion")
    assert fit(ids, 4, 9, "truncate-prompt") == (ids, 4, None)


def test_chat_truncation_keeps_mask_aligned(smol, shared_data):
    batch = glaive_batch(shared_data, 5)
    sp = Specials(2, 0, "<|endoftext|>", "existing special token")
    full, _, _ = tokenize_batch(batch, smol, "chat", TokenizeOptions(max_len=16384, tools_in_system=True), sp)
    cut, _, events = tokenize_batch(batch, smol, "chat", TokenizeOptions(max_len=128, tools_in_system=True), sp)
    assert sum(v for k, v in events.items() if k.startswith("truncated")) == 5
    for ids, labels, fids, flabels in zip(cut["input_ids"], cut["labels"], full["input_ids"], full["labels"],
                                          strict=True):
        start = next(i for i in range(len(fids)) if fids[i : i + len(ids)] == ids)  # where the window sits
        assert labels == flabels[start : start + len(ids)]


def test_fit_error_names_the_fix():
    with pytest.raises(DataprepError, match="--max-len"):
        fit([1, 2, 3], 1, 2, "error")


# ---------------------------------------------------------------- the per-batch function


def sft_batch(rows):
    return {"prompt": [p for p, _ in rows], "completion": [c for _, c in rows],
            "source": ["t"] * len(rows), "row": list(range(len(rows)))}


def test_batch_rejects_zero_trainable_after_truncation(smol):
    sp = Specials(2, 0, "<|endoftext|>", "existing special token")
    long_prompt = "word " * 50
    cols, rejects, events = tokenize_batch(sft_batch([(long_prompt, "ok"), ("Q:", " A")]), smol, "sft",
                                           TokenizeOptions(max_len=10, overflow="truncate"), sp)
    assert [r["row"] for r in rejects] == [0]
    assert rejects[0]["reason"] == "no trainable tokens after truncated_completion"
    assert cols["length"] == [4] and cols["labels"][0][-1] == 2
    assert events == Counter({"truncated_completion": 1, "fidelity.checked": 2})


def test_batch_train_on_inputs(smol):
    sp = Specials(2, 0, "<|endoftext|>", "existing special token")
    cols, _, _ = tokenize_batch(sft_batch([("Q:", " A")]), smol, "sft", TokenizeOptions(train_on_inputs=True), sp)
    assert cols["labels"][0] == cols["input_ids"][0]


# ---------------------------------------------------------------- chat on real glaive data


def glaive_batch(shared_data, n=None):
    rows = json.loads((shared_data / "glaive_toolcall_en_demo.json").read_text())[:n]
    msgs = [[{"role": ROLE[t["from"]], "content": t["value"]} for t in r["conversations"]] for r in rows]
    return {"messages": msgs, "tools": [r.get("tools") for r in rows], "source": ["glaive"] * len(rows),
            "row": list(range(len(rows)))}


def trained_runs(tok, ids, labels):
    """Decoded runs of consecutive trained tokens."""
    runs, cur = [], []
    for t, lab in zip(ids, labels, strict=True):
        if lab != M:
            cur.append(t)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    return runs + ([tok.decode(cur)] if cur else [])


@pytest.mark.parametrize("train_on", ["all-assistant", "last-assistant"])
def test_chat_trains_exactly_assistant_turns_with_end_of_turn(smol, shared_data, train_on):
    batch = glaive_batch(shared_data)
    sp = Specials(2, 0, "<|endoftext|>", "existing special token")
    opts = TokenizeOptions(max_len=16384, train_on=train_on, tools_in_system=True)
    cols, rejects, _ = tokenize_batch(batch, smol, "chat", opts, sp)
    assert rejects == [] and len(cols["input_ids"]) == len(batch["messages"]) == 300
    for msgs, ids, labels in zip(batch["messages"], cols["input_ids"], cols["labels"], strict=True):
        assistant = [m.get("content") + "<|im_end|>" for m in msgs if m.get("role") == "assistant"]
        expected = assistant if train_on == "all-assistant" else assistant[-1:]
        runs = trained_runs(smol, ids, labels)
        assert runs == expected
        assert ids.count(2) == len([m for m in msgs]) + 1  # one <|im_end|> per turn + the default system turn


def test_chat_first_row_token_by_token(smol, shared_data):
    batch = glaive_batch(shared_data, 1)
    sp = Specials(2, 0, "<|endoftext|>", "existing special token")
    cols, _, _ = tokenize_batch(batch, smol, "chat", TokenizeOptions(tools_in_system=True), sp)
    ids, labels = cols["input_ids"][0], cols["labels"][0]
    tokens = smol.convert_ids_to_tokens(ids)
    first = labels.index(next(x for x in labels if x != M))
    # the trained run starts right after "<|im_start|>assistant\n" and ends with <|im_end|>, not the "\n" after it
    assert tokens[first - 4 : first] == ["<|im_start|>", "ass", "istant", "Ċ"]
    end = first + next(i for i, x in enumerate(labels[first:]) if x == M)
    assert tokens[end - 1] == "<|im_end|>" and labels[end - 1] == 2 and tokens[end] == "Ċ" and labels[end] == M


# ---------------------------------------------------------------- the stage


def write_records(tmp_path, kind, data: dict, label_names=None):
    d = tmp_path / "records"
    d.mkdir()
    n = len(next(iter(data.values())))
    data = {**data, "source": ["test.json"] * n, "row": list(range(n))}
    schema = SCHEMAS[kind]
    table = pa.table({f.name: data.get(f.name, [None] * n) for f in schema}, schema=schema)
    pl.from_arrow(table).write_parquet(d / "records.parquet")
    manifest = {"stage": "convert", "lineage": {"kind": kind, "label_names": label_names}}
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


@pytest.fixture
def sft_dir(tmp_path):
    prompts = ["###답변:", "Answer: ", "Q: long " + "word " * 40, "Q:"]
    return write_records(tmp_path, "sft", {"prompt": prompts, "completion": ["서울", "Paris", "x", " A"]})


def test_stage_writes_shards_manifest_rejects(sft_dir, tmp_path):
    from datasets import load_from_disk

    out = tmp_path / "tok"
    m = tokenize(sft_dir, out, max_len=16, overflow="drop", num_shards=2, progress=False)
    assert not m.skipped
    assert m.counts.to_json() == {"in": 4, "out": 3, "rejected": 1, "rejected_by_reason": {"too_long": 1}}
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["row"], r["reason"]) for r in rejects] == [(2, "too_long")]
    for key in ("shards", "token_stats", "pad_policy", "tokenizer_files"):
        assert key in m.details
    lin = m.lineage
    assert (lin.tokenizer.pad_token_id, lin.tokenizer.eos_token_id, lin.kind, lin.packed, lin.max_len) == (0, 2, "sft", False, 16)
    assert lin.tokenizer.name == "smollm2-135m" and lin.tokenizer.fingerprint and len(m.get("shards")) == 2
    assert len(m.get("tokenizer_files")["files_sha256"]) == 64 and lin.template is None  # records made without convert
    assert [u["stage"] for u in lin.upstream] == ["convert"]
    ds = load_from_disk(str(out))
    assert len(ds) == 3 and ds.features["input_ids"].feature.dtype == "int32"
    assert ds[0]["labels"] == [M] * 7 + ds[0]["input_ids"][7:]
    # the shards are plain Arrow IPC streams, readable without `datasets`
    rows = sum(pa.ipc.open_stream(pa.memory_map(str(out / s))).read_all().num_rows for s in m.get("shards"))
    assert rows == 3
    st = m.get("token_stats")
    assert st["total"] == sum(ds["length"]) and st["trainable"] == sum(sum(x != M for x in r) for r in ds["labels"])
    assert read_manifest(out).fingerprint == m.fingerprint


def test_stage_cache_hit_and_force(sft_dir, tmp_path):
    out = tmp_path / "tok"
    first = tokenize(sft_dir, out, max_len=64, progress=False)
    assert tokenize(sft_dir, out, max_len=64, progress=False).skipped is True
    assert tokenize(sft_dir, out, max_len=64, progress=False, force=True).skipped is False
    changed = tokenize(sft_dir, out, max_len=32, progress=False)
    assert changed.skipped is False and changed.fingerprint != first.fingerprint


def test_stage_error_policy_writes_nothing(sft_dir, tmp_path):
    out = tmp_path / "tok"
    with pytest.raises(DataprepError, match="test.json row 0 has 14 tokens, more than --max-len 12"):
        tokenize(sft_dir, out, max_len=12, overflow="error", progress=False)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".tok")]


def test_stage_missing_column_is_one_line_error(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    pl.DataFrame({"prompt": ["a"], "source": ["s"], "row": [0]}).write_parquet(d / "records.parquet")
    (d / "manifest.json").write_text(json.dumps({"stage": "convert", "lineage": {"kind": "sft"}}))
    with pytest.raises(DataprepError, match="completion"):
        tokenize(d, tmp_path / "tok", progress=False)


def test_stage_classify_multi_hot_in_manifest_order(tmp_path):
    d = write_records(tmp_path, "classify", {"text": ["I love it", "so sad and angry", "meh", "odd", "yay " * 20],
                                             "labels": [["joy"], ["anger", "sadness"], [], ["nope"], ["joy"]]},
                      label_names=["sadness", "joy", "anger"])
    m = tokenize(d, tmp_path / "tok", tokenizer="minilm", max_len=8, progress=False)
    from datasets import load_from_disk

    ds = load_from_disk(str(tmp_path / "tok"))
    assert ds["label_ids"] == [[1], [0, 2], [], [1]]  # ids in the lineage's label_names order
    assert len(ds[3]["input_ids"]) == 8 and ds[3]["input_ids"][-1] == 102 and m.get("events") == {"truncated_text": 1}
    assert m.lineage.label_names == ["sadness", "joy", "anger"]
    assert m.counts.by_reason == {"unknown label": 1}
    assert ds[0]["input_ids"][0] == 101 and ds[0]["input_ids"][-1] == 102  # [CLS] ... [SEP]


def test_stage_preference_prompt_masks(tmp_path):
    d = write_records(tmp_path, "preference", {"prompt": ["###답변:"], "chosen": ["서울"], "rejected": ["부산입니다"],
                                               "messages": [None]})
    tokenize(d, tmp_path / "tok", max_len=64, progress=False)
    from datasets import load_from_disk

    row = load_from_disk(str(tmp_path / "tok"))[0]
    assert len(row["prompt_input_ids"]) == 7
    assert row["chosen_input_ids"][:7] == row["rejected_input_ids"][:7] == row["prompt_input_ids"]
    assert row["chosen_labels"] == [M] * 7 + row["chosen_input_ids"][7:]
    assert row["rejected_labels"][-1] == 2


def test_stage_preference_keeps_a_row_whose_long_prompt_is_truncated(tmp_path):
    """truncate-prompt keeps the completions whole; the row still trains and is not rejected."""
    d = write_records(tmp_path, "preference", {"prompt": ["###답변: " + "가나다라 " * 40], "chosen": ["서울"],
                                               "rejected": ["부산"], "messages": [None]})
    m = tokenize(d, tmp_path / "tok", max_len=16, progress=False)
    assert m.counts.n_out == 1 and m.counts.rejected == 0
    from datasets import load_from_disk

    row = load_from_disk(str(tmp_path / "tok"))[0]
    assert len(row["chosen_input_ids"]) <= 16 and row["chosen_labels"][-1] == 2


def test_pack_refuses_preference_records(tmp_path):
    d = write_records(tmp_path, "preference", {"prompt": ["q"], "chosen": ["a"], "rejected": ["b"], "messages": [None]})
    with pytest.raises(DataprepError, match=r"^--pack works for sft, chat and text records, not preference"):
        tokenize(d, tmp_path / "tok", max_len=16, pack=True, progress=False)
    assert not (tmp_path / "tok").exists()


def test_stage_chat_glaive(shared_data, tmp_path):
    batch = glaive_batch(shared_data)
    d = write_records(tmp_path, "chat", {"messages": batch["messages"], "tools": batch["tools"]})
    m = tokenize(d, tmp_path / "tok", max_len=16384, tools_in_system=True, progress=False)
    assert m.counts.n_in == m.counts.n_out == 300
    assert m.get("tokenizer_files")["chat_template_sha256"]


@pytest.mark.slow
def test_stage_num_proc_matches_single_process(shared_data, tmp_path):
    rows = json.loads((shared_data / "ko_alpaca_1040.json").read_text())[:120]
    d = write_records(tmp_path, "sft", {"prompt": [f"###질문: {r['instruction']}\n\n###답변:" for r in rows],
                                        "completion": [r["output"] for r in rows]})
    one = tokenize(d, tmp_path / "a" / "one", max_len=256, batch_size=32, progress=False)
    two = tokenize(d, tmp_path / "two", max_len=256, batch_size=32, num_proc=2, progress=False)
    from datasets import load_from_disk

    a, b = load_from_disk(str(tmp_path / "a" / "one")), load_from_disk(str(tmp_path / "two"))
    assert a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"] and len(a) == 120
    assert one.get("token_stats") == two.get("token_stats") and one.get("events") == two.get("events")


def test_stage_preference_with_messages_uses_chat_template(tmp_path):
    msgs = [[{"role": "user", "content": "Capital of Korea?"}]]
    d = write_records(tmp_path, "preference", {"prompt": ["Capital of Korea?"], "messages": msgs,
                                               "chosen": ["Seoul."], "rejected": ["Busan."]})
    tokenize(d, tmp_path / "tok", max_len=128, progress=False)
    from datasets import load_from_disk

    from dataprep.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    row = load_from_disk(str(tmp_path / "tok"))[0]
    assert tok.decode(row["prompt_input_ids"]).endswith("<|im_start|>user\nCapital of Korea?<|im_end|>\n"
                                                        "<|im_start|>assistant\n")
    k = len(row["prompt_input_ids"])
    assert tok.decode(row["chosen_input_ids"][k:]) == "Seoul.<|im_end|>"
    assert tok.decode([t for t in row["rejected_labels"] if t != M]) == "Busan.<|im_end|>"


def test_generation_template_from_a_lineage_template():
    from dataprep.templates import TEMPLATES, generation_template

    latex = TEMPLATES["latex"].as_config()
    assert generation_template("sft", latex) == "Convert English to LaTeX\nEnglish: {prompt}\nLaTeX:"
    assert generation_template("chat", None) == "chat"
    assert generation_template("sft", None) is None and generation_template("classify", latex) is None


def test_chat_header_after_assistant_is_not_trained(smol):
    import copy

    tok = copy.deepcopy(smol)
    # a template with no end-of-turn token: the next turn's header follows the assistant text directly
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Ciao"}]
    batch = {"messages": [msgs], "source": ["t"], "row": [0]}
    sp = Specials(2, 0, "<|endoftext|>", "existing special token")
    cols, rejects, _ = tokenize_batch(batch, tok, "chat", TokenizeOptions(), sp)
    assert rejects == []
    # EOS is appended after the last turn (the text does not end with it) and trained on
    assert trained_runs(tok, cols["input_ids"][0], cols["labels"][0]) == ["Hello", "Ciao<|im_end|>"]


def test_lineage_travels_through_dedupe_without_reading_upstream_manifests(tmp_path):
    """convert's template and kind reach tokenize through dedupe's manifest alone: the convert
    output is gone when tokenize runs, and nothing looks for it."""
    import shutil

    from dataprep.convert import convert
    from dataprep.dedupe import dedupe

    src = tmp_path / "raw.jsonl"
    src.write_text("".join(json.dumps({"instruction": f"Say {w}", "output": w}) + "\n" for w in ("a", "b", "a", "c")))
    conv = convert([str(src)], tmp_path / "conv", template="latex")
    dd = dedupe(tmp_path / "conv", tmp_path / "dd", methods=("exact",))
    shutil.rmtree(tmp_path / "conv")
    m = tokenize(tmp_path / "dd", tmp_path / "tok", max_len=64, progress=False)
    assert m.lineage.kind == "sft" and m.lineage.template["name"] == "latex"
    assert m.lineage.upstream == ({"stage": "convert", "fingerprint": conv.fingerprint},
                                  {"stage": "dedupe", "fingerprint": dd.fingerprint})
    assert m.lineage.tokenizer.name == "smollm2-135m" and m.lineage.max_len == 64 and m.lineage.packed is False


def test_chat_records_with_an_encoder_tokenizer_name_the_missing_chat_template(tmp_path):
    d = write_records(tmp_path, "chat", {"messages": [[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]]})
    with pytest.raises(DataprepError, match=r"^tokenizer minilm has no chat template; chat records need one"):
        tokenize(d, tmp_path / "tok", tokenizer="minilm", progress=False)
