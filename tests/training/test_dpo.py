"""DPO: the loss against hand values and trl's DPOTrainer, sequence isolation in the flat batch,
prompt tokens never scored, and a LoRA run that learns a toy preference."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dataprep.errors import DataprepError
from tests.train_helpers import preference_rows, tiny_causal_lm, tiny_tokenizer, write_shards
from training.data import buckets
from training.dpo import (
    DPOConfig,
    collate_pairs,
    dpo_loss_fn,
    dpo_losses,
    flat_padding,
    prepare_flex,
    sequence_logps,
    train_dpo,
)

I = -100  # noqa: E741


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("dpo")
    tok = tiny_tokenizer()
    rows = preference_rows(96)
    return {"dir": d, "model": tiny_causal_lm(d / "model"), "tok": tok, "rows": rows,
            "shards": write_shards(d / "shards", rows, "preference", tok)}


def _lora(model_dir, seed=0, init=False):
    """The tiny Llama under a LoRA adapter; init=False: random B, so the policy differs from the reference."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                            init_lora_weights=init))


def test_dpo_and_ipo_losses_equal_hand_computation_on_two_pairs():
    chosen, rejected = torch.tensor([-3.0, -5.0]), torch.tensor([-6.0, -2.0])
    ref_chosen, ref_rejected = torch.tensor([-4.0, -4.0]), torch.tensor([-5.0, -3.0])
    losses, rc, rr = dpo_losses(chosen, rejected, ref_chosen, ref_rejected, beta=0.1)
    # pair 1: log-ratios +1 (chosen) and -1 (rejected): -log σ(0.1 * 2); pair 2: -1 and +1: -log σ(-0.2)
    assert losses.tolist() == pytest.approx([math.log1p(math.exp(-0.2)), math.log1p(math.exp(0.2))], abs=1e-6)
    assert rc.tolist() == pytest.approx([0.1, -0.1]) and rr.tolist() == pytest.approx([-0.1, 0.1])
    ipo, _, _ = dpo_losses(chosen, rejected, ref_chosen, ref_rejected, beta=0.1, loss="ipo",
                           chosen_len=torch.tensor([2.0, 4.0]), rejected_len=torch.tensor([1.0, 2.0]))
    # pair 1: (1/2 - (-1)/1 - 5)^2 = 12.25; pair 2: (-1/4 - 1/2 - 5)^2 = 33.0625
    assert ipo.tolist() == pytest.approx([12.25, 33.0625])


def _separate_logps(model, seqs):
    """Each sequence alone through the full model: summed log-prob of its labelled tokens."""
    out = []
    with torch.no_grad():
        for ids, labels in seqs:
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
            lp = logits.log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)
            out.append(float(lp[torch.tensor(labels[1:]) != I].sum()))
    return out


def test_flat_pair_batch_scores_each_sequence_as_if_alone(tiny):
    """Chosen and rejected of 3 pairs in one padding-free forward: every sequence's log-prob equals
    its own forward's (no attention across sequences), response tokens only."""
    model = _lora(tiny["model"]).eval()
    rows = tiny["rows"][:3]
    batch = collate_pairs(rows)
    assert batch["input_ids"].shape[0] == 1 and batch["n_seqs"] == 6 and batch["n_targets"] == 3
    with torch.no_grad():
        logps, counts = sequence_logps(model, batch)
    seqs = [(r["chosen_input_ids"], r["chosen_labels"]) for r in rows] + [
        (r["rejected_input_ids"], r["rejected_labels"]) for r in rows]
    assert logps.tolist() == pytest.approx(_separate_logps(model, seqs), abs=1e-4)
    assert counts.tolist() == [sum(x != I for x in labels) for _, labels in seqs]


def test_buckets_round_up_to_a_multiple_and_stop_at_the_cap():
    rule = buckets(1024, cap=4096)
    assert [rule(n) for n in (1, 1024, 1025, 3000, 4096)] == [1024, 1024, 2048, 3072, 4096]
    assert rule(5000) == 5000  # longer than the cap: kept as it is, never cut
    assert flat_padding(2, 1024)(2049) == 3072 and flat_padding(2, 1024)(4096) == 4096
    assert flat_padding(4, 256)(300) == 512 and flat_padding(4, 256)(2048) == 2048  # bucket = max-len


def test_flex_attention_gets_buckets_and_compiled_layers_together(tiny):
    """prepare_flex (what train_preference runs): FlexAttention -> every decoder layer compiled and
    a bucket rule; sdpa -> neither, unless --compile asks for the layers."""
    def compiled(model):
        return [getattr(layer, "_compiled_call_impl", None) is not None
                for layer in model.get_base_model().model.layers]

    model = _lora(tiny["model"])
    assert prepare_flex(model, "sdpa", 4, 256) is None and not any(compiled(model))
    assert prepare_flex(model, "sdpa", 4, 256, compile_layers_too=True) is None and all(compiled(model))
    model = _lora(tiny["model"])
    pad_to = prepare_flex(model, "flex_attention", 4, 256)
    assert all(compiled(model)) and [pad_to(n) for n in (1, 300, 2048)] == [256, 512, 2048]


def test_bucketed_pair_batch_pads_to_the_bucket_and_keeps_every_logp(tiny):
    """A bucketed flat batch has the bucket's length; its filler is one unlabelled sequence after
    the pairs, so each sequence's log-prob, count and the DPO loss equal the unpadded batch's."""
    model = _lora(tiny["model"]).eval()
    rows = tiny["rows"][:3]
    plain, padded = collate_pairs(rows), collate_pairs(rows, buckets(64), pad_id=5)
    n = plain["input_ids"].shape[1]
    length = -(-n // 64) * 64
    assert n % 64 and padded["input_ids"].shape == padded["labels"].shape == (1, length)
    assert padded["n_tokens"] == n and padded["n_seqs"] == 6
    assert padded["input_ids"][0, n:].eq(5).all() and padded["labels"][0, n:].eq(I).all()
    assert padded["position_ids"][0, n:].tolist() == list(range(length - n))  # its own sequence
    assert torch.equal(padded["labels"][:, :n], plain["labels"])
    with torch.no_grad():
        (lp, cp), (lq, cq) = sequence_logps(model, plain), sequence_logps(model, padded)
        loss_plain, _ = dpo_loss_fn(DPOConfig(beta=0.1))(model, plain)
        loss_padded, _ = dpo_loss_fn(DPOConfig(beta=0.1))(model, padded)
    assert torch.equal(cp, cq) and lq.tolist() == pytest.approx(lp.tolist(), abs=1e-4)
    assert float(loss_padded) == pytest.approx(float(loss_plain), abs=1e-5)


def _response_grad_mask(model, row):
    """Which positions' final hidden states get a gradient from the sequence log-probs."""
    base = model.get_base_model()
    grads = {}

    def keep_grad(module, inputs, output):
        output.register_hook(lambda g: grads.setdefault("g", g))

    hook = base.model.norm.register_forward_hook(keep_grad)
    try:
        logps, _ = sequence_logps(model, collate_pairs([row]))
        logps.sum().backward()
    finally:
        hook.remove()
    return (grads["g"][0].abs().sum(-1) > 0).tolist()


def test_prompt_tokens_never_scored(tiny):
    """Only positions that predict a response token reach the loss; changing every prompt token
    leaves that gradient mask unchanged."""
    model = _lora(tiny["model"])
    row = tiny["rows"][0]
    k = len(row["prompt_input_ids"])
    other = [(t + 7) % 40 + 6 for t in row["prompt_input_ids"]]  # different words, same length
    changed = {**row, "prompt_input_ids": other, "chosen_input_ids": other + row["chosen_input_ids"][k:],
               "rejected_input_ids": other + row["rejected_input_ids"][k:]}
    mask = _response_grad_mask(model, row)
    n_c, n_r = len(row["chosen_input_ids"]), len(row["rejected_input_ids"])
    # position i predicts token i+1: chosen positions k-1 .. n_c-2, rejected likewise; the last of each never
    expected = [k - 1 <= i < n_c - 1 for i in range(n_c)] + [k - 1 <= i < n_r - 1 for i in range(n_r)]
    assert mask == expected
    assert _response_grad_mask(model, changed) == mask


def test_first_step_loss_equals_trl_dpo_trainer(tiny, tmp_path):
    """The same text through trl's DPOTrainer and through our convert + tokenize: the same tokens,
    and the same sigmoid loss within 1e-4 (policy = random LoRA, reference = adapter disabled)."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import DPOConfig as TrlDPOConfig
    from trl import DPOTrainer

    from dataprep.convert import convert
    from dataprep.tokenize import tokenize
    from tests.train_helpers import WORDS

    texts = [{"prompt": " ".join(WORDS[i:i + 3]) + " ", "chosen": " ".join(WORDS[i + 1:i + 4]),
              "rejected": " ".join(WORDS[i + 5:i + 7 + i % 3])} for i in range(4)]
    raw = tmp_path / "pairs.jsonl"
    raw.write_text("".join(json.dumps(t) + "\n" for t in texts))
    convert([str(raw)], tmp_path / "records", kind="preference")
    tokenize(tmp_path / "records", tmp_path / "shards", tokenizer=str(tiny["model"]), max_len=64, progress=False)
    from datasets import load_from_disk

    ours = [load_from_disk(str(tmp_path / "shards"))[i] for i in range(4)]
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False)
    args = TrlDPOConfig(output_dir=str(tmp_path / "trl"), beta=0.1, per_device_train_batch_size=4, report_to="none",
                        use_cpu=True, max_length=None, save_strategy="no", dataset_num_proc=None)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny["model"]), args=args, peft_config=lora,
                         train_dataset=Dataset.from_list(texts), processing_class=tiny["tok"])
    model = trainer.model  # trl's adapter (random B): the policy differs from the base, its reference
    theirs = [trainer.train_dataset[i] for i in range(4)]
    for o, t in zip(ours, theirs, strict=True):
        assert o["chosen_input_ids"] == t["prompt_ids"] + t["chosen_ids"]
        assert o["rejected_input_ids"] == t["prompt_ids"] + t["rejected_ids"]
    model.train()
    with torch.no_grad():
        trl_loss = float(trainer.compute_loss(model, trainer.data_collator(theirs)))
        loss, n = dpo_loss_fn(DPOConfig(beta=0.1))(model, collate_pairs(ours))
    assert abs(trl_loss - math.log(2)) > 1e-3  # the policy really differs from the reference
    assert float(loss) / n == pytest.approx(trl_loss, abs=1e-4)


def test_dpo_training_raises_reward_accuracy(tiny, tmp_path):
    cfg = DPOConfig(model=str(tiny["model"]), quant="none", lr=5e-3, micro_batch=8, epochs=1, val_size=16,
                    eval_steps=100, report_to="none", gradient_checkpointing=False, lora_r=8, lora_dropout=0.0, beta=0.5)
    manifest = train_dpo(str(tiny["shards"]), str(tmp_path / "out"), cfg)
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    first, last = m["eval_curve"][0], m["eval_curve"][-1]
    assert first["reward_accuracy"] == 0.0 and first["reward_margin"] == 0.0  # LoRA starts as the reference: ties
    assert last["reward_accuracy"] >= 0.9 and last["reward_margin"] > 0.5
    assert last["loss"] < first["loss"] == pytest.approx(math.log(2))
    assert {"reward_accuracy", "reward_margin", "logps_chosen", "logps_rejected"} <= set(m["train_loss"][-1])
    assert m["trained_examples"] == 80 and m["steps"] == 10  # 80 training pairs, 8 a step
    assert manifest.lineage.task == "dpo" and (tmp_path / "out" / "loss.png").is_file()
    assert (tmp_path / "out" / "adapter_config.json").is_file()


def test_dpo_on_sft_shards_is_one_line_error(tiny, tmp_path):
    from tests.train_helpers import sft_rows
    from training.run import train

    shards = write_shards(tmp_path / "sft", sft_rows(4), "sft", tiny["tok"])
    with pytest.raises(DataprepError, match="kind 'sft' .*--task is dpo"):
        train(str(shards), str(tmp_path / "out"), task="dpo", model=str(tiny["model"]))
