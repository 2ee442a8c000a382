"""The sft seam (--seam inference|joint) token by token, SentencePiece's dummy prefix, and the sft
fidelity check (a planted mismatch is counted and rejected, or kept with --on-mismatch warn)."""

from __future__ import annotations

import json

import pytest

from dataprep.tokenize import Specials, TokenizeOptions, tokenize, tokenize_batch
from dataprep.tokenize.rows import arrow_batch
from dataprep.tokenize.seam import FIDELITY_DECODE, FIDELITY_STRADDLE, continuation_tokenizer, seam_ids
from tests.tokenize.test_masks_and_stage import handmade, sft_batch, smol, write_records  # noqa: F401  (fixtures)

SP_VOCAB = ["<unk>", "<s>", "</s>", "▁", "a", "b", "x", "y", ":", '"', "▁a", "ab", ':"', "▁x"]
SP_MERGES = [("▁", "a"), ("a", "b"), (":", '"'), ("▁", "x")]


@pytest.fixture(scope="module")
def llama():
    """A tiny Llama-style SentencePiece BPE (transformers' LlamaTokenizer: Metaspace, prepend_scheme
    "first", a decoder that strips the dummy space): every text it encodes gets a leading `▁`."""
    from transformers import LlamaTokenizer

    return LlamaTokenizer(vocab={t: i for i, t in enumerate(SP_VOCAB)}, merges=SP_MERGES)


@pytest.fixture(scope="module")
def llama_legacy():
    """The same vocabulary as a legacy (transformers 4) Llama conversion: a `Prepend("▁")` + `Replace`
    normalizer instead of a pre-tokenizer, byte fallback, and the decoder's `Strip` of the first space."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(SP_VOCAB)}, merges=SP_MERGES, unk_token="<unk>",
                              fuse_unk=True))
    tk.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def masked(tok, prompt, completion, seam):
    """(tokens, labels as tokens or None, fidelity reason) for one sft row, EOS appended."""
    ((ids, k),), (reason,) = seam_ids(tok, [prompt], [completion], tok.eos_token_id, seam)
    toks = tok.convert_ids_to_tokens(ids)
    return toks, [None] * k + toks[k:], reason


# ---------------------------------------------------------------- the straddling token


def test_handmade_straddle_inference_trains_the_completions_first_token(handmade):  # noqa: F811
    tokens, labels, reason = masked(handmade, "xa", "by", "inference")
    assert handmade("xa").input_ids == [2, 3]  # the prompt as inference tokenizes it: x, a
    assert tokens == ["x", "a", "b", "y", "<eos>"]
    assert labels == [None, None, "b", "y", "<eos>"]
    assert reason is None


def test_handmade_straddle_joint_unchanged(handmade):  # noqa: F811
    tokens, labels, reason = masked(handmade, "xa", "by", "joint")
    assert tokens == ["x", "ab", "y", "<eos>"]  # `ab` spans the seam and counts as prompt
    assert labels == [None, None, "y", "<eos>"]
    assert reason == FIDELITY_STRADDLE


def test_smollm2_colon_quote_inference(smol):  # noqa: F811
    # ko-alpaca's `###답변:` then a completion starting with `"`: jointly `:"` is one token
    tokens, labels, reason = masked(smol, "###답변:", '"서울"', "inference")
    assert tokens == ["###", "ëĭ", "µ", "ë", "³", "Ģ", ":", '"', "ì", "Ħ", "ľ", "ì", "ļ", "¸", '"', "<|im_end|>"]
    assert labels == [None] * 7 + ['"', "ì", "Ħ", "ľ", "ì", "ļ", "¸", '"', "<|im_end|>"]
    assert reason is None
    assert smol("###답변:").input_ids == smol.convert_tokens_to_ids(tokens[:7])  # the prompt as at inference


def test_smollm2_colon_quote_joint_unchanged(smol):  # noqa: F811
    tokens, labels, reason = masked(smol, "###답변:", '"서울"', "joint")
    assert tokens == ["###", "ëĭ", "µ", "ë", "³", "Ģ", ':"', "ì", "Ħ", "ľ", "ì", "ļ", "¸", '"', "<|im_end|>"]
    assert labels == [None] * 7 + ["ì", "Ħ", "ľ", "ì", "ļ", "¸", '"', "<|im_end|>"]  # `"` never trained
    assert reason == FIDELITY_STRADDLE


def test_smollm2_prompt_ending_in_a_space(smol):  # noqa: F811
    tokens, labels, reason = masked(smol, "Answer: ", "Paris", "inference")
    assert tokens == ["Answer", ":", "Ġ", "Paris", "<|im_end|>"]  # the prompt's space alone, as at inference
    assert labels == [None, None, None, "Paris", "<|im_end|>"] and reason is None
    tokens, labels, reason = masked(smol, "Answer: ", "Paris", "joint")
    assert tokens == ["Answer", ":", "ĠParis", "<|im_end|>"] and labels == [None, None, None, "<|im_end|>"]
    assert reason == FIDELITY_STRADDLE


def test_smollm2_no_merge_identical_in_both_seams(smol):  # noqa: F811
    prompt = "### Instruction:\nSay hi.\n\n### Response:\n"
    assert masked(smol, prompt, "Hello!", "inference") == masked(smol, prompt, "Hello!", "joint")
    assert masked(smol, prompt, "Hello!", "inference")[1][-3:] == ["Hello", "!", "<|im_end|>"]


def test_smollm2_has_no_dummy_prefix_so_no_copy(smol, llama):  # noqa: F811
    # byte-level BPE without a normalizer: no copy, and the completion round-trips by construction
    assert continuation_tokenizer(smol) == (smol.backend_tokenizer, True)
    cont, lossless = continuation_tokenizer(llama)  # SentencePiece: a copy without the prefix, decoded to check
    assert cont is not llama.backend_tokenizer and not lossless


# ---------------------------------------------------------------- SentencePiece's dummy prefix


@pytest.mark.parametrize("name", ["llama", "llama_legacy"])
def test_sentencepiece_completion_has_no_dummy_prefix(name, request):
    tok = request.getfixturevalue(name)
    # encoded as a text of its own, the completion gets a leading `▁` (a space inference never emits)
    assert tok.convert_ids_to_tokens(tok('"y', add_special_tokens=False).input_ids) == ["▁", '"', "y"]
    tokens, labels, reason = masked(tok, "x:", '"y', "inference")
    assert tokens == [*tokens[: tokens.index("▁x")], "▁x", ":", '"', "y", "</s>"]
    assert labels[-3:] == ['"', "y", "</s>"] and labels[-4] is None
    assert reason is None
    assert tok.decode(tok.convert_tokens_to_ids(tokens), skip_special_tokens=True) == 'x:"y'


@pytest.mark.parametrize("name", ["llama", "llama_legacy"])
def test_sentencepiece_completion_with_its_own_space(name, request):
    tok = request.getfixturevalue(name)
    tokens, labels, reason = masked(tok, "x:", " ab", "inference")
    assert tokens[-3:] == ["▁a", "b", "</s>"] and labels[-3:] == ["▁a", "b", "</s>"]  # one space, not two
    assert reason is None
    # joint agrees here (no merge across the seam) and straddles where `:"` merges
    assert masked(tok, "x:", " ab", "joint")[:2] == (tokens, labels)
    assert masked(tok, "x:", '"y', "joint")[2] == FIDELITY_STRADDLE


# ---------------------------------------------------------------- the fidelity check


def test_planted_mismatch_is_counted(handmade):  # noqa: F811
    # `z` is not in the vocabulary: its ids lose it, so they cannot be what the model generates for "bz"
    (_, (ids, k)), reasons = seam_ids(handmade, ["x", "x"], ["ab", "bz"], 0, "inference")
    assert reasons == [None, FIDELITY_DECODE]
    assert handmade.convert_ids_to_tokens(ids[k:]) == ["b", "<eos>"]


def test_stage_rejects_planted_mismatch_and_counts_it(handmade, tmp_path):  # noqa: F811
    handmade.save_pretrained(tmp_path / "tok")
    rec = write_records(tmp_path, "sft", {"prompt": ["x", "x", "xa"], "completion": ["ab", "bz", "by"]})
    m = tokenize(rec, tmp_path / "out", tokenizer=str(tmp_path / "tok"), progress=False)
    assert m.get("fidelity") == {"checked": 3, "mismatched": 1, "by_reason": {FIDELITY_DECODE: 1}}
    assert (m.counts.n_in, m.counts.n_out) == (3, 2)
    rejects = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["row"], r["reason"]) for r in rejects] == [(1, f"fidelity: {FIDELITY_DECODE}")]
    assert m.config["seam"] == "inference" and m.config["on_mismatch"] == "reject"

    warn = tokenize(rec, tmp_path / "warn", tokenizer=str(tmp_path / "tok"), on_mismatch="warn", progress=False)
    assert warn.get("fidelity")["mismatched"] == 1 and warn.counts.n_out == 3

    joint = tokenize(rec, tmp_path / "joint", tokenizer=str(tmp_path / "tok"), seam="joint", progress=False)
    assert joint.get("fidelity") == {"checked": 3, "mismatched": 2,
                                     "by_reason": {FIDELITY_DECODE: 1, FIDELITY_STRADDLE: 1}}
    assert joint.counts.n_out == 3 and joint.config["on_mismatch"] == "warn"  # joint's seam differs by design


def test_seam_joint_leaves_preference_rejecting(handmade, tmp_path):  # noqa: F811
    """--seam is sft's: a preference run given --seam joint still rejects a mismatched answer by default
    (it used to switch to warn and keep the row)."""
    handmade.save_pretrained(tmp_path / "tok")
    rec = write_records(tmp_path, "preference", {"prompt": ["x", "x"], "chosen": ["ab", "ab"], "rejected": ["b", "bz"],
                                                 "messages": [None, None]})
    m = tokenize(rec, tmp_path / "out", tokenizer=str(tmp_path / "tok"), seam="joint", progress=False)
    assert m.config["on_mismatch"] == "reject" and (m.counts.n_in, m.counts.n_out) == (2, 1)
    rejects = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["row"], r["reason"]) for r in rejects] == [(1, f"fidelity: {FIDELITY_DECODE}")]


def test_batch_options_reject_or_keep(handmade):  # noqa: F811
    sp = Specials(0, 1, "<pad>", "tokenizer")
    batch = sft_batch([("x", "ab"), ("x", "bz")])
    cols, rejects, _ = tokenize_batch(batch, handmade, "sft", TokenizeOptions(), sp)
    assert len(cols["input_ids"]) == 1 and [r["row"] for r in rejects] == [1]
    kept = []
    cols, rejects, _ = tokenize_batch(batch, handmade, "sft", TokenizeOptions(on_mismatch="warn"), sp, kept=kept)
    assert len(cols["input_ids"]) == 2 and not rejects and [k["row"] for k in kept] == [1]
    assert arrow_batch("sft", cols).num_rows == 2  # the columns are the shard columns only (no kept-row list)


def test_preference_answers_have_no_dummy_prefix(llama):
    batch = {"prompt": ["x:"], "chosen": ['"y'], "rejected": [" ab"], "source": ["s"], "row": [0]}
    cols, _, _ = tokenize_batch(batch, llama, "preference", TokenizeOptions(), Specials(2, 0, "<unk>", "tokenizer"))
    k = len(cols["prompt_input_ids"][0])
    assert llama.convert_ids_to_tokens(cols["chosen_input_ids"][0][k:]) == ['"', "y", "</s>"]
    assert llama.convert_ids_to_tokens(cols["rejected_input_ids"][0][k:]) == ["▁a", "b", "</s>"]


def test_cli_prints_the_fidelity_line(handmade, tmp_path):  # noqa: F811
    from click.testing import CliRunner

    from dataprep.cli import cli

    handmade.save_pretrained(tmp_path / "tok")
    rec = write_records(tmp_path, "sft", {"prompt": ["x", "x", "xa"], "completion": ["ab", "bz", "by"]})
    result = CliRunner().invoke(cli, ["tokenize", str(rec), "-o", str(tmp_path / "out"), "--tokenizer",
                                      str(tmp_path / "tok"), "--seam", "joint"])
    assert result.exit_code == 0, result.output
    assert (f"fidelity (--seam joint): 3 checked, 2 mismatched ({FIDELITY_STRADDLE} 1, {FIDELITY_DECODE} 1; "
            "kept (--on-mismatch warn); see `dataprep inspect") in result.output
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path / "out"), "--fidelity"])
    assert result.exit_code == 0, result.output
    listed = [line.strip() for line in result.output.splitlines() if line.startswith("  ") and " row " in line]
    assert listed == [f"test.json row 1: {FIDELITY_DECODE}: --seam joint",  # which rows were kept, and why
                      f"test.json row 2: {FIDELITY_STRADDLE}: --seam joint"]


def test_joint_is_the_previous_tokenization_on_ko_alpaca(smol, shared_data):  # noqa: F811
    from dataprep.templates import render_prompt
    from dataprep.tokenize import prompt_completion_ids

    rows = json.loads((shared_data / "ko_alpaca_1040.json").read_text())[:300]
    prompts, completions = [render_prompt(r, "ko-alpaca") for r in rows], [r["output"] for r in rows]
    joint, reasons = seam_ids(smol, prompts, completions, smol.eos_token_id, "joint")
    assert joint == prompt_completion_ids(smol, prompts, completions, smol.eos_token_id)  # today's ids and k
    inference, none = seam_ids(smol, prompts, completions, smol.eos_token_id, "inference")
    straddled = [i for i, r in enumerate(reasons) if r is not None]
    assert set(reasons) == {None, FIDELITY_STRADDLE} and none == [None] * 300
    # rows without a merge are identical; in each straddled row `:` merged with the answer's first
    # character (`:"`, `:'`); inference has the two apart, one token more, the character trained
    assert all(joint[i] == inference[i] for i in range(300) if i not in straddled)
    assert len(straddled) == 30  # 182 of all 1,040: answers starting with " (152), ' (16), : (10), - (3), | (1)
    for i in straddled:
        (ids_j, k_j), (ids_i, k_i) = joint[i], inference[i]
        first = completions[i][0]
        assert len(ids_i) == len(ids_j) + 1 and k_i == k_j
        assert [smol.decode([t]) for t in (ids_j[k_j - 1], ids_i[k_i - 1], ids_i[k_i])] == [":" + first, ":", first]


def test_preference_answers_counted_and_checked(handmade):  # noqa: F811
    """Preference rows report the fidelity check too: both answers of every row are checked (tokenized
    from a token boundary after the prompt tokenized alone, so only an answer whose ids do not decode
    to its text can differ: `z` has no token in the handmade BPE); the row is rejected, or kept and
    listed under --on-mismatch warn."""
    from dataprep.tokenize import fidelity

    sp = Specials(0, 1, "<pad>", "tokenizer")
    batch = {"prompt": ["x", "x", "xa"], "chosen": ["ab", "ab", "y"], "rejected": ["b", "bz", "zz"],
             "source": ["s"] * 3, "row": [0, 1, 2]}
    cols, rejects, events = tokenize_batch(batch, handmade, "preference", TokenizeOptions(), sp)
    assert len(cols["chosen_input_ids"]) == 1
    assert [(r["row"], r["reason"], r["detail"]) for r in rejects] == [
        (1, f"fidelity: {FIDELITY_DECODE}", "rejected answer; --on-mismatch warn keeps the row"),
        (2, f"fidelity: {FIDELITY_DECODE}", "rejected answer; --on-mismatch warn keeps the row")]
    assert fidelity.summary(events) == {"checked": 6, "mismatched": 2, "by_reason": {FIDELITY_DECODE: 2}}
    kept = []
    cols, rejects, events = tokenize_batch(batch, handmade, "preference", TokenizeOptions(on_mismatch="warn"), sp,
                                           kept=kept)
    assert len(cols["chosen_input_ids"]) == 3 and not rejects and arrow_batch("preference", cols).num_rows == 3
    assert [(k["row"], k["detail"]) for k in kept] == [(1, "rejected answer"), (2, "rejected answer")]


def test_preference_manifest_reports_the_check(smol, tmp_path):  # noqa: F811
    """A byte-level tokenizer's answers are as generated by construction: every answer counted, none
    mismatched, and the manifest says so for preference as for chat and sft."""
    d = write_records(tmp_path, "preference", {"prompt": ["Capital?", "Sum?"], "chosen": ["Seoul", " 4"],
                                               "rejected": ["Busan", "5 "], "messages": [None, None]})
    m = tokenize(d, tmp_path / "tok", max_len=64, progress=False)
    assert m.counts.n_out == 2
    assert m.get("fidelity") == {"checked": 4, "mismatched": 0, "by_reason": {}}
    assert m.config["on_mismatch"] == "reject"


def test_kto_completions_counted_and_checked(handmade, tmp_path):  # noqa: F811
    """kto completions are tokenized like preference answers and checked the same way: `bz` does not
    decode to itself (no `z` in the handmade BPE), so its row is rejected by default, kept and listed
    under --on-mismatch warn, and the manifest reports the check."""
    from dataprep.tokenize import fidelity

    sp = Specials(0, 1, "<pad>", "tokenizer")
    batch = {"prompt": ["x", "x", "xa"], "completion": ["ab", "bz", "y"], "label": [True, False, True],
             "source": ["s"] * 3, "row": [0, 1, 2]}
    cols, rejects, events = tokenize_batch(batch, handmade, "kto", TokenizeOptions(), sp)
    assert [(r["row"], r["reason"]) for r in rejects] == [(1, f"fidelity: {FIDELITY_DECODE}")]
    assert cols["label"] == [True, True] and cols["input_ids"][0] == [2, 6, 0]  # x | ab <eos>
    assert cols["labels"][0] == [-100, 6, 0]
    assert fidelity.summary(events) == {"checked": 3, "mismatched": 1, "by_reason": {FIDELITY_DECODE: 1}}
    kept = []
    cols, rejects, _ = tokenize_batch(batch, handmade, "kto", TokenizeOptions(on_mismatch="warn"), sp, kept=kept)
    assert not rejects and cols["label"] == [True, False, True] and arrow_batch("kto", cols).num_rows == 3
    assert [(k["row"], k["detail"]) for k in kept] == [(1, "completion")]

    handmade.save_pretrained(tmp_path / "tok")
    rec = write_records(tmp_path, "kto", batch)
    m = tokenize(rec, tmp_path / "out", tokenizer=str(tmp_path / "tok"), progress=False)
    assert m.get("fidelity") == {"checked": 3, "mismatched": 1, "by_reason": {FIDELITY_DECODE: 1}}
    assert (m.counts.n_in, m.counts.n_out) == (3, 2) and m.config["on_mismatch"] == "reject"
