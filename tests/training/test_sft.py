"""SFT: collators token by token, isolation of packed sequences, LoRA and QLoRA training runs,
adapter save/reload/merge, and the errors raised before training starts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dataprep.cli import cli
from dataprep.errors import DataprepError
from dataprep.stage import Lineage, TokenizerInfo, read_manifest
from tests.train_helpers import pack, sft_rows, tiny_causal_lm, tiny_tokenizer, write_shards
from training.data import collate_flat, collate_padded

I = -100  # noqa: E741


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Llama with the tiny tokenizer, and packed / unpacked shards of the same rows."""
    d = tmp_path_factory.mktemp("sft")
    tok = tiny_tokenizer()
    rows = sft_rows(48)
    return {
        "dir": d,
        "model": tiny_causal_lm(d / "model"),
        "tok": tok,
        "rows": rows,
        "unpacked": write_shards(d / "unpacked", rows, "sft", tok),
        "packed": write_shards(d / "packed", pack(rows, 40), "sft", tok, packed=True, max_len=40),
    }


def test_collate_flat_restarts_positions_and_masks_sequence_starts():
    rows = [
        {"input_ids": [5, 6, 7, 8, 9], "labels": [6, 7, I, 8, 9], "position_ids": [0, 1, 2, 0, 1]},
        {"input_ids": [10, 11], "labels": [I, 11], "position_ids": [0, 1]},
    ]
    batch = collate_flat(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10, 11]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1]]
    # the first token of every sequence is never a target (its label would be predicted across the boundary)
    assert batch["labels"].tolist() == [[I, 7, I, I, 9, I, 11]]
    assert "attention_mask" not in batch


def test_collate_padded_pads_to_multiple_of_8():
    batch = collate_padded([{"input_ids": [1, 2, 3], "labels": [I, 2, 3]}, {"input_ids": [4] * 9, "labels": [4] * 9}], 0)
    assert batch["input_ids"].shape == (2, 16)
    assert batch["input_ids"][0].tolist() == [1, 2, 3] + [0] * 13
    assert batch["attention_mask"].sum(1).tolist() == [3, 9]
    assert batch["labels"][0].tolist() == [I, 2, 3] + [I] * 13


def _per_sequence_losses(model, input_ids, labels, position_ids, seq_lens):
    """Summed next-token CE per sequence, from one forward over the (1, T) flattened row."""
    with torch.no_grad():
        logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits[0]
    ce = torch.nn.functional.cross_entropy(logits[:-1], labels[0, 1:], reduction="none", ignore_index=I)
    out, start = [], 0
    for n in seq_lens:
        out.append(float(ce[start : start + n - 1].sum()))
        start += n
    return out


def test_packed_and_unpacked_batches_give_the_same_per_sequence_loss(tiny):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny["model"], attn_implementation="sdpa").eval()
    rows = tiny["rows"][:5]
    alone = []
    for r in rows:
        ids = torch.tensor([r["input_ids"]])
        alone += _per_sequence_losses(model, ids, torch.tensor([r["labels"]]), torch.arange(ids.shape[1])[None], [ids.shape[1]])
    flat = collate_flat(pack(rows, 1000))
    lens = [len(r["input_ids"]) for r in rows]
    packed = _per_sequence_losses(model, flat["input_ids"], flat["labels"], flat["position_ids"], lens)
    assert packed == pytest.approx(alone, rel=1e-5, abs=1e-5)
    # control: the same flattened row without restarting positions lets sequences see each other
    leaky = _per_sequence_losses(model, flat["input_ids"], flat["labels"], torch.arange(sum(lens))[None], lens)
    assert leaky[1:] != pytest.approx(alone[1:], rel=1e-3)


def _train(tiny, shards, out, **kw):
    from training.sft import SFTConfig, train_sft

    cfg = SFTConfig(model=str(tiny["model"]), micro_batch=8, lr=5e-3, max_steps=12, eval_steps=6, val_size=8,
                    report_to="none", lora_dropout=0.0, warmup_ratio=0.0, **kw)
    return train_sft(str(tiny[shards]), str(out), cfg)


def _assert_learned(out):
    metrics = json.loads((Path(out) / "metrics.json").read_text())
    losses = [r["loss"] for r in metrics["train_loss"]]
    assert sum(losses[-4:]) / 4 < losses[0] - 0.2, losses
    assert metrics["eval_loss"][-1]["loss"] < metrics["eval_loss"][0]["loss"]
    assert 0 < metrics["trainable_params"] < metrics["total_params"]
    assert metrics["trained_tokens"] > 0 and metrics["trained_tokens_per_s"] > 0
    return metrics


def _assert_merge_matches_adapter(adapter, tmp_path):
    """The merged model (float32 base) computes the same logits as base + adapter."""
    from transformers import AutoModelForCausalLM

    from training.merge import merge_adapter
    from training.outputs import load_adapter_model

    merge_adapter(adapter, tmp_path / "merged", dtype="float32")
    peft_model, _, _ = load_adapter_model(adapter, "float32")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    ids = torch.tensor([[7, 8, 9, 10, 11]])
    with torch.no_grad():
        assert torch.allclose(peft_model(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-4)
        # and the adapter did change the model
        with peft_model.disable_adapter():
            assert not torch.allclose(peft_model(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("shards", ["packed", "unpacked"])
def test_lora_sft_learns_saves_and_merges(tiny, tmp_path, shards):
    out = tmp_path / "adapter"
    _train(tiny, shards, out, gradient_checkpointing=False)
    metrics = _assert_learned(out)
    assert metrics["packed"] is (shards == "packed")
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "metrics.json", "loss.png"):
        assert (out / name).is_file(), name
    manifest = read_manifest(out)
    assert manifest.lineage.task == "sft" and manifest.counts.n_in == {"packed": 14, "unpacked": 48}[shards]
    _assert_merge_matches_adapter(out, tmp_path)
    assert _train(tiny, shards, out, gradient_checkpointing=False).skipped is True  # same inputs and options: nothing to redo


@pytest.mark.slow
def test_qlora_4bit_on_cpu_learns_saves_and_merges(tiny, tmp_path):
    import bitsandbytes  # noqa: F401

    out = tmp_path / "qlora"
    _train(tiny, "packed", out, quant="4bit")
    metrics = _assert_learned(out)
    assert metrics["quant"] == "4bit" and metrics["bf16"] is True
    _assert_merge_matches_adapter(out, tmp_path)


def test_task_mismatch_fails_before_training(tiny, tmp_path, runner):
    names = ["a", "b"]
    write_shards(tmp_path / "cls", [{"input_ids": [1, 2], "label_ids": [0]}], "classify", tiny["tok"], label_names=names)
    result = runner.invoke(cli, ["train", str(tmp_path / "cls"), "--task", "sft", "--model", str(tiny["model"]),
                                 "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: shards in {tmp_path / 'cls'} are of kind 'classify' (task classify) but --task is sft; "
        "pass --task classify or tokenize the right data"
    )
    assert not (tmp_path / "out").exists()


def test_tokenizer_mismatch_fails_before_training(tiny, tmp_path):
    from transformers import AutoTokenizer

    from training.sft import SFTConfig, train_sft

    other = tiny_tokenizer()
    other.add_tokens(["extra"])  # one more token: a different vocabulary
    shards = write_shards(tmp_path / "sh", tiny["rows"][:4], "sft", other, tokenizer_name="other-tok")
    with pytest.raises(DataprepError, match=r"differs from the one the shards were tokenized with \(other-tok") as exc:
        train_sft(str(shards), str(tmp_path / "out"), SFTConfig(model=str(tiny["model"]), report_to="none"))
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "out").exists()
    assert AutoTokenizer.from_pretrained(tiny["model"]).vocab_size == other.vocab_size  # only the added token differs


def test_4bit_without_bitsandbytes_fails_before_training(tiny, tmp_path, monkeypatch):
    import importlib.util

    from training.sft import SFTConfig, train_sft

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(DataprepError, match=r"^--quant 4bit needs bitsandbytes; pip install"):
        train_sft(str(tiny["packed"]), str(tmp_path / "out"), SFTConfig(model=str(tiny["model"]), quant="4bit"))
    assert not (tmp_path / "out").exists()


def test_collate_flat_pad_to_appends_an_untrained_filler_sequence():
    batch = collate_flat([{"input_ids": [5, 6, 7], "labels": [I, 6, 7]}], pad_to=6, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2]]
    assert batch["labels"].tolist() == [[I, 6, 7, I, I, I]]


def test_input_pad_id_stays_inside_the_vocabulary():
    from training.sft import input_pad_id

    def lineage(pad, eos):
        return Lineage(tokenizer=TokenizerInfo("t", "fp", pad_token_id=pad, eos_token_id=eos))

    assert input_pad_id(lineage(0, 2), 100) == 0
    assert input_pad_id(lineage(100, 2), 100) == 2  # an added pad beyond the embeddings
    assert input_pad_id(lineage(None, 2), 100) == 2


def test_collate_flat_counts_real_tokens_without_the_filler():
    batch = collate_flat([{"input_ids": [5, 6, 7], "labels": [I, 6, 7]}], pad_to=8)
    assert batch["n_tokens"] == 3 and batch["input_ids"].shape == (1, 8)


def test_chunked_trained_only_loss_equals_full_logits_loss_and_gradients(tiny, monkeypatch):
    """The loss over trained positions, projected LOSS_CHUNK at a time (the fused loss), gives
    the same value and the same gradients as cross-entropy over full-vocabulary logits."""
    from transformers import AutoModelForCausalLM

    from training import sft

    monkeypatch.setattr(sft, "LOSS_CHUNK", 7)  # several chunks and a ragged last one
    batch = collate_flat(pack(tiny["rows"][:4], 1000))
    n_trained = int((batch["labels"][:, 1:] != I).sum())
    assert n_trained > 2 * 7

    def grads(loss_fn):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny["model"], attn_implementation="sdpa")
        loss, count = loss_fn(model)
        loss.backward()
        return loss.detach().item(), count, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    def full(model):
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        return torch.nn.functional.cross_entropy(logits[0, :-1], batch["labels"][0, 1:], ignore_index=I, reduction="sum"), None

    chunked_loss, count, chunked_grads = grads(lambda m: sft.causal_lm_loss_sum(m, batch))
    full_loss, _, full_grads = grads(full)
    assert count == n_trained
    assert chunked_loss == pytest.approx(full_loss, rel=1e-5)
    assert chunked_grads.keys() == full_grads.keys() and "lm_head.weight" in chunked_grads
    for name, g in full_grads.items():
        assert torch.allclose(chunked_grads[name], g, atol=1e-5, rtol=1e-4), name


def test_target_index_found_on_the_cpu_gives_the_mask_loss_and_gradients(tiny, monkeypatch):
    """causal_batches' flat batches carry the trained positions (`target_index`, `n_targets`), so
    the loss never reads a mask's size back from the device; it equals the boolean-mask path."""
    from transformers import AutoModelForCausalLM

    from training import sft

    monkeypatch.setattr(sft, "LOSS_CHUNK", 7)
    plain = collate_flat(pack(tiny["rows"][:4], 1000), pad_to=1200)
    indexed = sft.with_target_index(plain)
    expected = [i for i in range(plain["labels"].shape[1] - 1) if plain["labels"][0, i + 1] != I]
    assert indexed["target_index"].tolist() == expected and indexed["n_targets"] == len(expected)

    def run(batch):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny["model"], attn_implementation="sdpa")
        loss, count = sft.causal_lm_loss_sum(model, batch)
        loss.backward()
        return float(loss.detach()), count, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    (a, na, ga), (b, nb, gb) = run(plain), run(indexed)
    assert na == nb == len(expected) and a == pytest.approx(b, rel=1e-6)
    for name, g in ga.items():
        torch.testing.assert_close(gb[name], g, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_qlora_keeps_frozen_weights_bf16_unless_asked_and_checkpoints_layers(tiny):
    """prepare_model_for_kbit_training upcasts norms/embeddings/head to fp32; by default they go
    back to bf16 (LoRA weights stay fp32), and gradient checkpointing is on in training mode."""
    from training.sft import SFTConfig, add_lora, load_model

    cfg = SFTConfig(lora_dropout=0.0)
    for upcast, frozen_dtype in ((False, torch.bfloat16), (True, torch.float32)):
        model = add_lora(load_model(str(tiny["model"]), "4bit", True, "sdpa", True, kbit_upcast=upcast), cfg)
        frozen = {p.dtype for n, p in model.named_parameters() if "norm" in n or "embed" in n or "lm_head" in n}
        assert frozen == {frozen_dtype}, (upcast, frozen)
        assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
        model.train()
        assert all(layer.gradient_checkpointing for layer in model.get_base_model().model.layers)


def test_packed_batches_for_flex_attention_have_one_static_length(tiny):
    """FlexAttention is compiled per shape: every packed micro-batch is padded to micro_batch x
    max_len with an untrained filler, and the token count excludes the filler."""
    from training.data import load_shards
    from training.sft import causal_batches

    dataset, manifest = load_shards(tiny["packed"])
    batches = causal_batches(dataset, manifest.lineage, 4, False, static_len=4 * manifest.lineage.max_len)(0)
    assert {b["input_ids"].shape for b in batches} == {(1, 160)}
    assert sum(b["n_tokens"] for b in batches) == sum(len(r["input_ids"]) for r in tiny["rows"])
    assert all((b["labels"][0, b["n_tokens"]:] == I).all() for b in batches)


def test_a_batch_with_nothing_trained_gives_zero_loss_that_backpropagates(tiny):
    from transformers import AutoModelForCausalLM

    from training.sft import causal_lm_loss_sum

    model = AutoModelForCausalLM.from_pretrained(tiny["model"], attn_implementation="sdpa")
    batch = collate_flat([{"input_ids": [5, 6, 7, 8], "labels": [I, I, I, I]}])
    loss, count = causal_lm_loss_sum(model, batch)
    loss.backward()  # the training loop backpropagates every micro-batch
    assert count == 0 and loss.item() == 0.0


def test_classify_labels_are_stored_as_ids_and_collated_multi_hot():
    batch = collate_padded([{"input_ids": [5, 6], "label_ids": [0, 3]}, {"input_ids": [7], "label_ids": []}], 0,
                           num_labels=20_000)
    assert batch["labels"].shape == (2, 20_000) and batch["labels"].dtype == torch.float32
    assert batch["labels"][0].nonzero().flatten().tolist() == [0, 3] and batch["labels"][1].sum() == 0


def test_compile_cache_goes_to_the_dataprep_cache_unless_the_user_set_one(tmp_path, monkeypatch):
    from training.sft import persistent_compile_cache

    monkeypatch.setenv("DATAPREP_CACHE", str(tmp_path / "dp"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    persistent_compile_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "dp" / "torch-compile")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    persistent_compile_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")


# (under bf16 autocast, the dtype of the hidden states and the head)
PRECISIONS = {"fp32": (False, torch.float32), "bf16_autocast": (True, torch.float32),
              "bf16_autocast_bf16_weights": (True, torch.bfloat16)}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("bias", [False, True])
def test_fused_linear_cross_entropy_equals_cross_entropy_and_its_gradients(monkeypatch, bias, precision):
    """The loss with gradients computed in the forward (ragged chunks) equals cross_entropy over
    the full logits, and so do the gradients of hidden, weight and bias; so does the loss before it
    (checkpointed chunks, FUSED_LOSS off). In fp32, and under bf16 autocast as `dataprep train`
    runs it: with fp32 tensors (--kbit-upcast) and with bf16 ones (the default), each against
    cross_entropy under the same autocast, to bf16's precision."""
    import contextlib

    from training import sft

    monkeypatch.setattr(sft, "LOSS_CHUNK", 7)
    autocast, dtype = PRECISIONS[precision]
    torch.manual_seed(0)
    hidden, targets = torch.randn(20, 8, dtype=dtype), torch.randint(0, 11, (20,))

    def run(fn):
        torch.manual_seed(1)
        head = torch.nn.Linear(8, 11, bias=bias, dtype=dtype)
        h = hidden.clone().requires_grad_()
        with torch.autocast("cpu", torch.bfloat16) if autocast else contextlib.nullcontext():
            loss = fn(head, h)
        (loss * 3).backward()  # the backward scales by the incoming gradient
        return loss.detach(), h.grad, head.weight.grad, head.bias.grad if bias else None

    def close(a, b, name, fused):
        if autocast and name != "loss":  # bf16 gradients: within ~2.5 bf16 roundings (2^-8)
            assert float((a.float() - b.float()).norm()) <= 1e-2 * float(b.float().norm()), (name, fused)
        else:  # the loss: fp32 arithmetic on the same (bf16 under autocast) logits
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}, fused={fused}: {m}")

    expected = run(lambda head, h: torch.nn.functional.cross_entropy(head(h), targets, reduction="sum"))
    for fused in (True, False):
        monkeypatch.setattr(sft, "FUSED_LOSS", fused)
        got = run(lambda head, h: sft.linear_cross_entropy_sum(head, h, targets))
        for name, a, b in zip(("loss", "hidden", "weight", "bias"), got, expected, strict=True):
            if b is not None:
                close(a, b, name, fused)


class Ops(TorchDispatchMode):
    """Counts the matmuls of what runs under it and keeps the shapes of every op's outputs."""

    def __init__(self):
        super().__init__()
        self.matmuls, self.shapes = 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.matmuls += func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm)
        out = func(*args, **(kwargs or {}))
        self.shapes += [tuple(t.shape) for t in (out if isinstance(out, (list, tuple)) else [out])
                        if isinstance(t, torch.Tensor)]
        return out


def test_fused_loss_projects_in_the_forward_only_and_keeps_just_the_hidden_gradient(monkeypatch):
    """The fused loss turns each chunk's logits into their gradient in the forward: the backward
    makes no matmul (the checkpointed path recomputes every chunk's projection there), and what it
    keeps for the backward is one tensor shaped like the hidden states."""
    from training import sft

    monkeypatch.setattr(sft, "LOSS_CHUNK", 4)
    hidden, targets = torch.randn(10, 8, requires_grad=True), torch.randint(0, 11, (10,))

    def matmuls(head):
        saved = []
        forward, backward = Ops(), Ops()
        with forward, torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
            loss = sft.linear_cross_entropy_sum(head.requires_grad_(False), hidden, targets)
        with backward:
            loss.backward()
        return forward.matmuls, backward.matmuls, saved

    assert matmuls(torch.nn.Linear(8, 11, bias=False)) == (6, 0, [hidden.shape])  # 3 chunks: logits + gradient
    monkeypatch.setattr(sft, "FUSED_LOSS", False)
    _, recomputed, _ = matmuls(torch.nn.Linear(8, 11, bias=False))
    assert recomputed >= 3  # the checkpointed path projects each chunk again in the backward


def test_fused_loss_under_no_grad_computes_no_gradient(monkeypatch):
    """Under torch.no_grad (evaluation), a trainable head and hidden states that require grad get
    only the loss: one projection per chunk, no weight-shaped gradient buffer; with grad on, the
    same call makes the hidden and the weight gradients (three matmuls per chunk)."""
    from training import sft

    monkeypatch.setattr(sft, "LOSS_CHUNK", 4)
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 11, bias=True)
    hidden, targets = torch.randn(10, 8, requires_grad=True), torch.randint(0, 11, (10,))
    expected = torch.nn.functional.cross_entropy(head(hidden), targets, reduction="sum")

    def ops(grad: bool):
        with torch.set_grad_enabled(grad), Ops() as mode:
            loss = sft.linear_cross_entropy_sum(head, hidden, targets)
        return loss, mode

    loss, mode = ops(False)
    assert mode.matmuls == 3 and not loss.requires_grad  # 3 chunks, logits only
    assert (11, 8) not in mode.shapes and (10, 8) not in mode.shapes  # no weight or hidden gradient
    torch.testing.assert_close(loss, expected)
    loss, mode = ops(True)
    assert mode.matmuls == 9 and (11, 8) in mode.shapes and loss.requires_grad
    torch.testing.assert_close(loss.detach(), expected.detach())


@pytest.mark.parametrize("fused", [True, False])
def test_loss_of_an_empty_batch_is_zero_and_backpropagates_zero_gradients(monkeypatch, fused):
    from training import sft

    monkeypatch.setattr(sft, "FUSED_LOSS", fused)
    head = torch.nn.Linear(8, 11)
    hidden = torch.randn(0, 8, requires_grad=True)
    loss = sft.linear_cross_entropy_sum(head, hidden, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and hidden.grad.shape == (0, 8)
    assert not head.weight.grad.any() and not head.bias.grad.any()
