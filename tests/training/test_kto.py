"""KTO: convert (trl's unpaired format, LLaMA-Factory's kto_tag), tokenize with masks, the loss
against hand values and trl's KTOTrainer, and a LoRA run."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dataprep.errors import DataprepError
from tests.train_helpers import WORDS, tiny_causal_lm, tiny_tokenizer
from training.kto import KTOConfig, collate_kto, kto_loss_fn, kto_losses, train_kto


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("kto")
    return {"dir": d, "model": tiny_causal_lm(d / "model"), "tok": tiny_tokenizer()}


def _records(path):
    import polars as pl

    return pl.read_parquet(path / "records.parquet").to_dicts()


def test_convert_reads_trl_unpaired_and_llama_factory_kto_tag(tmp_path):
    from dataprep.convert import convert

    trl_rows = [{"prompt": "Capital of France?", "completion": "Paris.", "label": True},
                {"prompt": [{"role": "user", "content": "2+2?"}], "completion": [{"role": "assistant", "content": "5"}],
                 "label": False},
                {"prompt": "q", "completion": "a", "label": "maybe"}]
    (tmp_path / "trl.jsonl").write_text("".join(json.dumps(r) + "\n" for r in trl_rows))
    m = convert([str(tmp_path / "trl.jsonl")], tmp_path / "a", kind="kto")
    recs = _records(tmp_path / "a")
    assert [(r["prompt"], r["completion"], r["label"]) for r in recs] == [("Capital of France?", "Paris.", True),
                                                                          ("2+2?", "5", False)]
    assert m.counts.rejected == 1
    rejects = [json.loads(x) for x in (tmp_path / "a" / "rejects.jsonl").read_text().splitlines()]
    assert rejects[0]["reason"] == "label is not a boolean (true/false)" and rejects[0]["row"] == 2
    lf = [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}], "kto_tag": False}]
    (tmp_path / "lf.json").write_text(json.dumps(lf))
    convert([str(tmp_path / "lf.json")], tmp_path / "b", kind="kto")
    rec = _records(tmp_path / "b")[0]
    assert (rec["prompt"], rec["completion"], rec["label"]) == ("Hi", "Hello!", False)
    assert rec["messages"] == [{"role": "user", "content": "Hi"}]


def test_tokenize_masks_the_prompt_and_keeps_the_label(tiny, tmp_path):
    from datasets import load_from_disk

    from dataprep.convert import convert
    from dataprep.tokenize import tokenize

    rows = [{"prompt": "w1 w2 ", "completion": "w3 w4", "label": True}, {"prompt": "w5 ", "completion": "w6", "label": False}]
    (tmp_path / "k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    convert([str(tmp_path / "k.jsonl")], tmp_path / "rec", kind="kto")
    tokenize(tmp_path / "rec", tmp_path / "sh", tokenizer=str(tiny["model"]), max_len=32, progress=False)
    ds = load_from_disk(str(tmp_path / "sh"))
    tok = tiny["tok"]
    ids = tok.convert_tokens_to_ids(["w1", "w2", "w3", "w4"]) + [tok.eos_token_id]
    assert ds[0]["input_ids"] == ids and ds[0]["labels"] == [-100, -100] + ids[2:] and ds[0]["label"] is True
    assert ds[1]["label"] is False


def test_kto_loss_equals_hand_computation():
    logps, ref = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -4.0])  # log-ratios +1, -1
    kl_logps, ref_kl = torch.tensor([-2.0, -6.0]), torch.tensor([-2.5, -6.1])  # z = mean(0.5, 0.1) = 0.3
    losses, rewards, kl = kto_losses(logps, ref, kl_logps, ref_kl, torch.tensor([True, False]), beta=0.5,
                                     undesirable_weight=2.0)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert float(kl) == pytest.approx(0.3)
    assert losses.tolist() == pytest.approx([1 - sig(0.5 * (1 - 0.3)), 2 * (1 - sig(0.5 * (0.3 + 1)))], abs=1e-6)
    assert rewards.tolist() == pytest.approx([0.5, -0.5])
    _, _, z = kto_losses(logps, ref, ref_kl, kl_logps, torch.tensor([True, False]), beta=0.5)
    assert float(z) == 0.0  # a negative KL estimate is clamped to 0


def test_loss_equals_trl_kto_trainer(tiny, tmp_path):
    """The same text through trl's KTOTrainer and through our convert + tokenize: the same tokens,
    the same mismatched pairs and the same loss within 1e-4 (policy = random LoRA)."""
    pytest.importorskip("trl")
    from datasets import Dataset, load_from_disk
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import KTOConfig as TrlKTOConfig
    from trl import KTOTrainer

    from dataprep.convert import convert
    from dataprep.tokenize import tokenize

    texts = [{"prompt": " ".join(WORDS[i:i + 3]) + " ", "completion": " ".join(WORDS[i + 4:i + 6 + i % 3]),
              "label": i % 3 != 1} for i in range(4)]
    (tmp_path / "k.jsonl").write_text("".join(json.dumps(t) + "\n" for t in texts))
    convert([str(tmp_path / "k.jsonl")], tmp_path / "rec", kind="kto")
    tokenize(tmp_path / "rec", tmp_path / "sh", tokenizer=str(tiny["model"]), max_len=64, progress=False)
    ours = [load_from_disk(str(tmp_path / "sh"))[i] for i in range(4)]
    torch.manual_seed(5)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False)
    args = TrlKTOConfig(output_dir=str(tmp_path / "trl"), beta=0.1, per_device_train_batch_size=4, report_to="none",
                        use_cpu=True, max_length=None, save_strategy="no", train_sampling_strategy="sequential")
    trainer = KTOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny["model"]), args=args, peft_config=lora,
                         train_dataset=Dataset.from_list(texts), processing_class=tiny["tok"])
    theirs = [trainer.train_dataset[i] for i in range(4)]
    for o, t in zip(ours, theirs, strict=True):
        assert o["input_ids"] == t["prompt_ids"] + t["completion_ids"] and o["label"] == t["label"]
    model = trainer.model
    model.train()
    with torch.no_grad():
        trl_loss = float(trainer.compute_loss(model, trainer.data_collator(theirs)))
        loss, n = kto_loss_fn(KTOConfig(beta=0.1))(model, collate_kto(ours))
    assert abs(trl_loss - 0.5) > 1e-3  # the policy differs from the reference (at equality every loss is 0.5)
    assert float(loss) / n == pytest.approx(trl_loss, abs=1e-4)


def test_kto_training_learns_which_answers_are_desirable(tiny, tmp_path):
    from tests.train_helpers import preference_rows, write_shards

    rows = []
    for i, r in enumerate(preference_rows(96)):  # chosen-style answers desirable, rejected-style ones not
        side = "chosen" if i % 2 else "rejected"
        rows.append({"input_ids": r[f"{side}_input_ids"], "labels": r[f"{side}_labels"], "label": side == "chosen"})
    shards = write_shards(tmp_path / "s", rows, "kto", tiny["tok"])
    cfg = KTOConfig(model=str(tiny["model"]), quant="none", lr=1e-2, micro_batch=8, epochs=2, val_size=16, eval_steps=100,
                    report_to="none", gradient_checkpointing=False, lora_r=8, lora_dropout=0.0, beta=0.5)
    manifest = train_kto(str(shards), str(tmp_path / "out"), cfg)
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    first, last = m["eval_curve"][0], m["eval_curve"][-1]
    assert first["loss"] == pytest.approx(0.5) and last["loss"] < 0.45
    assert last["reward_accuracy"] >= 0.8 > first["reward_accuracy"] and last["reward_margin"] > 0
    assert manifest.lineage.task == "kto"


def test_kto_task_on_preference_shards_is_one_line_error(tiny, tmp_path):
    from tests.train_helpers import preference_rows, write_shards
    from training.run import train

    shards = write_shards(tmp_path / "p", preference_rows(4), "preference", tiny["tok"])
    with pytest.raises(DataprepError, match=r"kind 'preference' \(task dpo\) but --task is kto; pass --task dpo"):
        train(str(shards), str(tmp_path / "out"), task="kto", model=str(tiny["model"]))


def test_filter_reads_a_kto_records_prompt_and_answer():
    import polars as pl

    from dataprep.filter.fields import DEFAULT_FIELDS, field_texts

    frame = pl.DataFrame({"prompt": ["q"], "messages": [[{"role": "user", "content": "q"}]], "completion": ["ans"],
                          "label": [False]})
    assert DEFAULT_FIELDS["kto"] == ("prompt", "answer")
    assert field_texts(frame, "kto", "answer") == ["ans"] and field_texts(frame, "kto", "prompt") == ["q"]
