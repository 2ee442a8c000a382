"""Overflow per kind: preference pairs share one prompt (`fit_pair`), long text rows become
--max-len windows (--overflow split, --stride), and events are named for what was cut."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from datasets import load_from_disk

from dataprep.convert import convert
from dataprep.errors import DataprepError
from dataprep.records import IGNORE_INDEX as M
from dataprep.tokenize import Specials, TokenizeOptions, tokenize, tokenize_batch
from dataprep.tokenize.masks import fit_pair, windows
from tests.tokenize.test_masks_and_stage import smol, write_records  # noqa: F401  (a fixture)

SP = Specials(2, 0, "<|endoftext|>", "existing special token")


@pytest.mark.parametrize(("overflow", "expected"), [
    ("truncate-prompt", (2, 3, 8, ["truncated_prompt"])),  # the prompt is cut for the longer answer, once
    ("truncate", (6, 3, 4, ["truncated_b"])),
    ("drop", (6, 3, 8, ["too_long"])),
])
def test_fit_pair_one_prompt_cut_for_both(overflow, expected):
    assert fit_pair(6, 3, 8, 10, overflow) == expected


def test_fit_pair_answer_too_long_alone_keeps_half_the_prompt():
    assert fit_pair(6, 3, 20, 10, "truncate-prompt") == (5, 3, 5, ["truncated_prompt", "truncated_b"])
    assert fit_pair(2, 3, 4, 10, "truncate-prompt") == (2, 3, 4, [])
    with pytest.raises(DataprepError, match="more than --max-len 10"):
        fit_pair(6, 3, 8, 10, "error")


def test_windows_cover_every_token_once_trained():
    ids = list(range(23))
    for stride in (0, 3):
        parts = windows(ids, 8, stride)
        assert all(len(w) <= 8 for w, _ in parts) and parts[0][1] == 0
        trained = [t for w, k in parts for t in w[k:]]
        assert trained == ids  # every token trained exactly once, in order
    assert windows(ids[:8], 8, 3) == [(ids[:8], 0)]


def pref_batch(prompts, chosen, rejected, messages=None):
    n = len(prompts)
    return {"prompt": prompts, "chosen": chosen, "rejected": rejected, "messages": messages or [None] * n,
            "source": ["t.json"] * n, "row": list(range(n))}


def assert_shared_prompt(cols):
    for p, c, r, cl, rl in zip(cols["prompt_input_ids"], cols["chosen_input_ids"], cols["rejected_input_ids"],
                               cols["chosen_labels"], cols["rejected_labels"], strict=True):
        k = len(p)
        assert c[:k] == r[:k] == p
        assert cl[:k] == rl[:k] == [M] * k and M not in cl[k:] and M not in rl[k:]


def test_long_chosen_short_rejected_share_the_identical_prompt(smol):  # noqa: F811
    prompt = "Explain the history of the city in detail. " * 5
    batch = pref_batch([prompt], ["The city was founded long ago and grew. " * 20], ["No."])
    for overflow in ("truncate-prompt", "truncate"):
        cols, rejects, events = tokenize_batch(batch, smol, "preference", TokenizeOptions(max_len=64, overflow=overflow), SP)
        assert not rejects and len(cols["length"]) == 1
        assert_shared_prompt(cols)
        assert max(len(cols["chosen_input_ids"][0]), len(cols["rejected_input_ids"][0])) <= 64
        assert events["truncated_chosen"] == 1 and events["truncated_rejected"] == 0
        assert cols["rejected_input_ids"][0][-1] == 2  # the short side keeps its whole answer and EOS


def test_pair_with_no_answer_left_is_rejected_with_a_reason(smol):  # noqa: F811
    cols, rejects, events = tokenize_batch(pref_batch(["word " * 50], ["a"], ["b"]), smol, "preference",
                                           TokenizeOptions(max_len=10, overflow="truncate"), SP)
    assert not cols["length"] and rejects[0]["reason"].startswith("no trainable tokens after truncated_prompt")


def test_two_turn_preference_keeps_both_turns(smol):  # noqa: F811
    msgs = [{"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": "Hello Ada."},
            {"role": "user", "content": "What is my name?"}]
    batch = pref_batch(["What is my name?"], ["Ada."], ["Bob."], [msgs])
    cols, _, _ = tokenize_batch(batch, smol, "preference", TokenizeOptions(max_len=256), SP)  # chat template
    text = smol.decode(cols["prompt_input_ids"][0])
    assert all(m["content"] in text for m in msgs) and text.endswith("<|im_start|>assistant\n")
    plain = smol.__class__.from_pretrained(smol.name_or_path)
    plain.chat_template = None
    cols, _, _ = tokenize_batch(batch, plain, "preference", TokenizeOptions(max_len=256), SP)
    text = plain.decode(cols["prompt_input_ids"][0])
    assert text == "User: My name is Ada.\n\nAssistant: Hello Ada.\n\nUser: What is my name?\n\nAssistant: "
    assert_shared_prompt(cols)
    single = pref_batch(["Hi?"], ["Hello."], ["Go."], [[{"role": "user", "content": "Hi?"}]])
    cols, _, _ = tokenize_batch(single, plain, "preference", TokenizeOptions(max_len=256), SP)
    assert plain.decode(cols["prompt_input_ids"][0]) == "Hi?"  # one user turn: the prompt as it is


def prompts_differ(out) -> int:
    ds = load_from_disk(str(out))
    return sum(c[: len(p)] != p or r[: len(p)] != p
               for p, c, r in zip(ds["prompt_input_ids"], ds["chosen_input_ids"], ds["rejected_input_ids"], strict=True))


def test_dpo_en_demo_every_pair_shares_its_prompt(shared_data, tmp_path):
    convert([str(shared_data / "dpo_en_demo.json")], str(tmp_path / "records"), kind="preference")
    m = tokenize(tmp_path / "records", tmp_path / "tok", max_len=128, progress=False)
    assert m.counts.n_out > 250 and prompts_differ(tmp_path / "tok") == 0
    ev = m.get("events")
    assert ev["truncated_prompt"] > 0 and ev["truncated_chosen"] > 0 and ev["truncated_rejected"] > 0
    assert set(ev) <= {"truncated_prompt", "truncated_chosen", "truncated_rejected"}


def test_chinese_pairs_share_their_prompt(shared_data, tmp_path):
    rows = json.loads((shared_data / "alpaca_zh_demo.json").read_text())[:200]
    d = write_records(tmp_path, "preference", {
        "prompt": [r["instruction"] + "\n" + r["input"] for r in rows],
        "chosen": [r["output"] * 3 for r in rows], "rejected": [r["output"][:10] for r in rows],
        "messages": [None] * len(rows)})
    m = tokenize(d, tmp_path / "tok", max_len=96, progress=False)
    assert m.get("events")["truncated_chosen"] > 0 and prompts_differ(tmp_path / "tok") == 0


def c4_lengths(shared_data, n=20):
    from dataprep.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    lines = (shared_data / "c4_demo.jsonl").read_text().splitlines()[:n]
    return [len(tok(json.loads(x)["text"])["input_ids"]) + 1 for x in lines]  # + EOS


@pytest.mark.parametrize("stride", [0, 16])
def test_c4_long_texts_become_windows(shared_data, tmp_path, stride):
    convert([str(shared_data / "c4_demo.jsonl")], str(tmp_path / "records"), kind="text", limit=20)
    m = tokenize(tmp_path / "records", tmp_path / "tok", max_len=128, stride=stride, progress=False)
    lengths = c4_lengths(shared_data)
    ds = load_from_disk(str(tmp_path / "tok"))
    assert m.get("token_stats")["trainable"] == sum(lengths)  # nothing lost
    assert max(ds["length"]) <= 128 and m.config["overflow"] == "split" and m.config["stride"] == stride
    split = [n for n in lengths if n > 128]
    assert m.get("events") == {"split_into_windows": len(split), "windows": len(ds) - len(lengths)}
    assert len(ds) > len(lengths) and m.get("token_stats")["sequences"] == len(ds)
    assert m.counts.n_out == len(lengths) and m.counts.rejected == 0  # records: a split text is one
    eos = [i for i, ids in enumerate(ds["input_ids"]) if ids[-1] == 2]
    assert len(eos) == len(lengths)  # EOS only at each document's end


def test_text_truncate_still_available_and_named(shared_data, tmp_path):
    convert([str(shared_data / "c4_demo.jsonl")], str(tmp_path / "records"), kind="text", limit=20)
    m = tokenize(tmp_path / "records", tmp_path / "tok", max_len=128, overflow="truncate", progress=False)
    lengths = c4_lengths(shared_data)
    assert m.get("events") == {"truncated_text": sum(n > 128 for n in lengths)} and m.counts.n_out == 20
    assert m.get("token_stats")["trainable"] == sum(min(n, 128) for n in lengths)


def test_split_and_stride_are_checked(tmp_path):
    d = write_records(tmp_path, "sft", {"prompt": ["Q:"], "completion": [" A"]})
    with pytest.raises(DataprepError, match="--overflow split is for text records, not sft"):
        tokenize(d, tmp_path / "a", overflow="split", progress=False)
    with pytest.raises(DataprepError, match="--stride applies to text records"):
        tokenize(d, tmp_path / "b", stride=4, progress=False)
    t = tmp_path / "t"
    t.mkdir()
    d = write_records(t, "text", {"text": ["hello world"]})
    with pytest.raises(DataprepError, match="--stride 8 must be below --max-len 8"):
        tokenize(d, tmp_path / "c", max_len=8, stride=8, progress=False)
    m = tokenize(d, tmp_path / "d", max_len=8, progress=False)
    assert m.counts.n_out == 1 and m.get("events") == {} and Counter(m.config)["stride"] == 0


def test_dpo_en_demo_prompt_keeps_every_turn(shared_data, tmp_path):
    """186 of its 300 pairs are multi-turn: the chat template renders every turn of `messages`."""
    import polars as pl

    from dataprep.models import load_tokenizer

    convert([str(shared_data / "dpo_en_demo.json")], str(tmp_path / "records"), kind="preference")
    tokenize(tmp_path / "records", tmp_path / "tok", max_len=8192, progress=False)
    tok, ds = load_tokenizer("smollm2-135m"), load_from_disk(str(tmp_path / "tok"))
    messages = pl.read_parquet(tmp_path / "records" / "records.parquet")["messages"].to_list()
    assert sum(len(m) > 1 for m in messages) > 100
    for msgs, p in zip(messages, ds["prompt_input_ids"], strict=True):
        text = tok.decode(p)
        assert all(m["content"].strip() in text for m in msgs)
