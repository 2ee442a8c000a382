"""Reward models: the Bradley-Terry loss against hand values, an encoder and a LoRA decoder that
learn a toy preference (held-out pairwise accuracy), scoring through `dataprep generate`, and
preference shards from an encoder tokenizer (MiniLM)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from dataprep.cli import cli
from dataprep.errors import DataprepError
from tests.train_helpers import WORDS, preference_rows, tiny_causal_lm, tiny_encoder, tiny_tokenizer, write_shards
from training.reward import RewardConfig, reward_losses, score_responses, train_reward


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("reward")
    tok = tiny_tokenizer()
    return {"dir": d, "tok": tok, "shards": write_shards(d / "shards", preference_rows(96), "preference", tok)}


def test_reward_loss_is_minus_logsigmoid_of_the_margin():
    losses = reward_losses(torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.0]))
    assert losses.tolist() == pytest.approx([math.log1p(math.exp(-1.5)), math.log1p(math.exp(2.0))], abs=1e-6)


@pytest.mark.parametrize("arch", ["encoder", "decoder"])
def test_reward_model_learns_held_out_pairs_and_scores_through_generate(tiny, arch, tmp_path):
    model = (tiny_encoder if arch == "encoder" else tiny_causal_lm)(tmp_path / "model")
    cfg = RewardConfig(model=str(model), lr=2e-3 if arch == "encoder" else 1e-2, micro_batch=8, epochs=2, val_size=16,
                       eval_steps=100, report_to="none", lora_dropout=0.0)
    out = tmp_path / "rm"
    manifest = train_reward(str(tiny["shards"]), str(out), cfg)
    m = json.loads((out / "metrics.json").read_text())
    assert m["decoder"] == (arch == "decoder") and manifest.lineage.task == "reward"
    assert m["eval"]["accuracy"] >= 0.9 and m["eval"]["margin"] > 0
    assert m["eval_curve"][-1]["loss"] < m["eval_curve"][0]["loss"]
    good, bad = " ".join(WORDS[1:4]), " ".join(WORDS[30:33])
    scores = score_responses(out, ["w5 w6", "w5 w6"], [good, bad])
    assert scores[0]["score"] > scores[1]["score"]
    res = CliRunner().invoke(cli, ["generate", str(out), "--prompt", "w5 w6", "--response", good])
    assert res.exit_code == 0, res.output
    assert f"--- score {scores[0]['score']:.4f}" in res.output


def test_scoring_needs_one_response_per_prompt(tiny, tmp_path):
    res = CliRunner().invoke(cli, ["generate", str(tmp_path), "--prompt", "a", "--response", "b"])
    assert res.exit_code != 0 and "is not one (no reward.json)" in res.output


def test_preference_shards_from_minilm_end_each_side_with_sep(tmp_path):
    """An encoder tokenizer (no EOS, no chat template): [CLS] prompt [SEP] answer [SEP], prompt masked."""
    from datasets import load_from_disk

    from dataprep.convert import convert
    from dataprep.models import load_tokenizer, resolve_model
    from dataprep.tokenize import tokenize

    raw = tmp_path / "p.jsonl"
    raw.write_text(json.dumps({"prompt": "What is two plus two?", "chosen": "Four.", "rejected": "Five."}) + "\n")
    convert([str(raw)], tmp_path / "rec", kind="preference")
    tokenize(tmp_path / "rec", tmp_path / "sh", tokenizer="minilm", max_len=64, progress=False)
    tok = load_tokenizer(resolve_model("minilm"))
    row = load_from_disk(str(tmp_path / "sh"))[0]
    p = row["prompt_input_ids"]
    assert tok.decode(row["chosen_input_ids"]) == "[CLS] what is two plus two? [SEP] four. [SEP]"
    assert tok.decode(row["rejected_input_ids"]) == "[CLS] what is two plus two? [SEP] five. [SEP]"
    assert row["chosen_labels"] == [-100] * len(p) + row["chosen_input_ids"][len(p):]


def test_preference_file_missing_rejected_is_one_line_error(tmp_path):
    from dataprep.convert import convert

    raw = tmp_path / "p.jsonl"
    raw.write_text(json.dumps({"prompt": "q", "chosen": "a"}) + "\n")
    with pytest.raises(DataprepError, match="rejected") as err:
        convert([str(raw)], tmp_path / "rec", kind="preference")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "rec").exists()
