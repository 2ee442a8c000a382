"""Masked-LM: the masking (share, specials, 80/10/10, whole words), continued and from-config
training runs, encoder text shards, and the causal-tokenizer error."""

from __future__ import annotations

import json
import random

import pytest
import torch

from dataprep.errors import DataprepError
from tests.train_helpers import WORDS, tiny_causal_lm, tiny_masked_lm, tiny_tokenizer, write_shards
from training.mlm import Masker


def _batch(tok, rows=10, width=1000, pad_tail=100, seed=0):
    """rows x width random words, [CLS] first, [SEP] last real token, `pad_tail` pads per row."""
    g = torch.Generator().manual_seed(seed)
    first_word = tok.convert_tokens_to_ids(WORDS[0])
    ids = torch.randint(first_word, first_word + len(WORDS), (rows, width), generator=g)
    mask = torch.ones_like(ids)
    ids[:, 0] = tok.cls_token_id
    ids[:, width - pad_tail - 1] = tok.sep_token_id
    ids[:, width - pad_tail:] = tok.pad_token_id
    mask[:, width - pad_tail:] = 0
    return ids, mask


def test_masking_share_specials_and_80_10_10():
    tok = tiny_tokenizer(encoder=True)
    ids, mask = _batch(tok, rows=12, width=1000, pad_tail=100)  # 12 x 898 = 10,776 maskable tokens
    special = (ids == tok.cls_token_id) | (ids == tok.sep_token_id) | (mask == 0)
    masked, labels = Masker(tok, 0.15, False)(ids, mask, torch.Generator().manual_seed(1))
    picked = labels != -100
    assert abs(picked[~special].float().mean().item() - 0.15) < 0.01
    assert not picked[special].any() and torch.equal(masked[special], ids[special])  # specials and padding never touched
    assert torch.equal(labels[picked], ids[picked]) and torch.equal(masked[~picked], ids[~picked])
    n = picked.sum().item()
    to_mask = (masked[picked] == tok.mask_token_id).sum().item() / n
    kept = (masked[picked] == ids[picked]).sum().item() / n
    random_other = 1 - to_mask - kept
    assert abs(to_mask - 0.8) < 0.03 and abs(kept - 0.1) < 0.03 and abs(random_other - 0.1) < 0.03


def test_whole_word_masking_picks_every_piece_of_a_word():
    from dataprep.models import load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model("minilm"))
    text = " ".join(["unbelievably tokenization antidisestablishmentarianism hello world"] * 40)
    enc = tok([text] * 8, return_tensors="pt")
    masked, labels = Masker(tok, 0.3, True)(enc["input_ids"], enc["attention_mask"], torch.Generator().manual_seed(0))
    tokens = tok.convert_ids_to_tokens(enc["input_ids"][0])
    word_of, w = [], -1
    for t in tokens:
        w += 0 if t.startswith("##") else 1
        word_of.append(w)
    multi_piece_picked = 0
    for row in range(8):
        picked = (labels[row] != -100).tolist()
        for word in set(word_of):
            flags = {picked[i] for i, x in enumerate(word_of) if x == word}
            assert len(flags) == 1  # all pieces or none
            multi_piece_picked += flags == {True} and word_of.count(word) > 1
    assert multi_piece_picked > 10
    assert torch.equal(masked[labels != -100], torch.full_like(masked[labels != -100], tok.mask_token_id))


def _text_rows(n: int, tok, seed: int = 0) -> list[dict]:
    """[CLS] runs of consecutive words [SEP]: a masked word is predictable from its neighbours."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        start, k = rng.randrange(0, 30), rng.randint(5, 10)
        ids = [tok.cls_token_id] + tok.convert_tokens_to_ids(WORDS[start:start + k]) + [tok.sep_token_id]
        rows.append({"input_ids": ids, "labels": ids})
    return rows


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlm")
    tok = tiny_tokenizer(encoder=True)
    return {"dir": d, "tok": tok, "model": tiny_masked_lm(d / "model"),
            "shards": write_shards(d / "shards", _text_rows(160, tok), "text", tok)}


@pytest.mark.parametrize("from_config", [False, True])
def test_mlm_training_lowers_eval_loss(tiny, tmp_path, from_config):
    from training.run import train

    out = tmp_path / "out"
    manifest = train(str(tiny["shards"]), str(out), model=str(tiny["model"]), lr=1e-2, micro_batch=16, epochs=6,
                     val_size=32, eval_steps=1000, report_to="none", from_config=from_config, hidden_size=64, layers=1,
                     mlm_probability=0.3)
    m = json.loads((out / "metrics.json").read_text())
    assert manifest.lineage.task == "mlm"  # the default for text shards from an encoder tokenizer
    first, last = m["eval_loss"][0], m["eval_loss"][-1]
    assert first["tokens"] == last["tokens"] > 0  # the same fixed eval masks
    assert last["loss"] < first["loss"] - 0.5, (first, last)
    assert m["from_config"] == from_config
    saved = json.loads((out / "config.json").read_text())
    assert saved["num_hidden_layers"] == (1 if from_config else 2)  # --layers 1, or the continued two-layer model
    assert (out / "config.json").is_file() and (out / "loss.png").is_file()


def test_mlm_on_causal_tokenizer_shards_is_one_line_error(tmp_path):
    from tests.train_helpers import sft_rows
    from training.run import train

    tok = tiny_tokenizer()
    model = tiny_causal_lm(tmp_path / "lm")
    shards = write_shards(tmp_path / "s", [{"input_ids": r["input_ids"], "labels": r["input_ids"]} for r in sft_rows(8)],
                          "text", tok)
    with pytest.raises(DataprepError, match=r"needs shards from an encoder tokenizer with a mask token; .* causal") as err:
        train(str(shards), str(tmp_path / "out"), task="mlm", model=str(model))
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def test_text_shards_from_minilm_have_no_completion_masks(tmp_path):
    from datasets import load_from_disk

    from dataprep.convert import convert
    from dataprep.tokenize import tokenize
    from training.data import resolve_task_model

    raw = tmp_path / "t.jsonl"
    raw.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["Hello world.", "Masked language models."]))
    convert([str(raw)], tmp_path / "rec", kind="text")
    tokenize(tmp_path / "rec", tmp_path / "sh", tokenizer="minilm", max_len=64, progress=False)
    ds = load_from_disk(str(tmp_path / "sh"))
    for row in ds:
        assert row["labels"] == row["input_ids"]
        assert row["input_ids"][0] == 101 and row["input_ids"][-1] == 102  # [CLS] ... [SEP], no EOS appended
    assert resolve_task_model(tmp_path / "sh", None, None) == ("mlm", "minilm")


def test_train_prints_a_summary_for_every_new_task():
    from dataprep.commands.train import summary

    mlm = summary("mlm", "o", {"steps": 3, "masked_tokens": 100, "params": 10, "eval_loss": [{"loss": 2.0}, {"loss": 1.5}]})
    assert "eval MLM loss 2.0000 -> 1.5000" in mlm
    rm = summary("reward", "o", {"steps": 3, "pooling": "mean", "trainable_params": 5, "total_params": 10,
                                 "eval": {"accuracy": 0.7, "margin": 0.3}, "eval_curve": [{"accuracy": 0.5}]})
    assert "held-out pairwise accuracy 0.500 -> 0.700" in rm
    curve = [{"loss": 0.69, "reward_accuracy": 0.0, "reward_margin": 0.0}, {"loss": 0.6, "reward_accuracy": 0.7,
                                                                             "reward_margin": 0.2}]
    dpo = summary("dpo", "o", {"steps": 3, "trained_examples": 8, "examples_per_s": 1.0, "trainable_params": 5,
                               "total_params": 10, "train_loss": curve, "eval_curve": curve})
    assert "8 pairs" in dpo and "reward accuracy 0.000 -> 0.700" in dpo


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["main", "cli"])
def test_a_new_mlm_head_is_not_reported_as_noise(tiny, tmp_path, entry):
    """An encoder saved without its MLM head (as the packaged MiniLM is): through `main` neither
    transformers' load-report table nor its 'checkpoint seem corrupted' line about the new head's
    tied bias shows; the click group called directly (a library user's embedding) still shows them."""
    import subprocess
    import sys

    from transformers import BertConfig, BertModel

    enc = tmp_path / "enc"
    tok = tiny["tok"]
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
              ).save_pretrained(enc)
    tok.save_pretrained(enc)
    args = [sys.executable, "-c", f"from dataprep.cli import {entry}; {entry}()", "train", str(tiny["shards"]),
            "--model", str(enc), "--task", "mlm", "--max-steps", "1", "--report-to", "none", "-o", str(tmp_path / "out")]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    noise = [n for n in ("LOAD REPORT", "absent from the checkpoint") if n in result.stderr]
    assert (noise == []) if entry == "main" else noise, result.stderr[-2000:]
