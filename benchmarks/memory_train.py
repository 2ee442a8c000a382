"""Where a QLoRA SFT step's memory goes, measured on the CPU: ours (training.sft) vs what trl's
SFTTrainer + peft build, on a few layers of the 1B Llama shape.

Counted per variant, without a GPU (a TorchDispatchMode follows every tensor storage an op makes
until it is freed; the frozen 4-bit weights are plain bf16 here, the same for every variant):
  - parameters by dtype and requires_grad (the LoRA adapters: fp32 from peft's
    `autocast_adapter_dtype`, or bf16 as trl 1.16 casts them for quantised models);
  - the bytes the forward saves for the backward (`saved_tensors_hooks`, unique storages);
  - the peak of live bytes over forward + backward, and the op and phase at that peak, both
    above what was live before the step (the weights).

All use an attention stand-in with FlexAttention's memory (CPU attention kernels keep T x T
scores, which the GPU path never has) and leave the LoRA input in bf16, as peft's 4-bit layers do
under autocast. Variants (--variants):
  ours           training.sft.causal_lm_loss_sum (the fused loss, training.sft.LOSS_CHUNK positions
                 at a time), LoRA fp32, bf16 autocast: what `dataprep train` does
  ours_bf16lora  ours with the LoRA weights in bf16 (as trl 1.16 has them)
  ours_chunkN    ours projecting N positions at a time (ours_chunk256, ...)
  trl            trl 1.16's fused LM head (ChunkedLogProbFunction, 4,096 x 32,768 tiles; on the CPU its torch
                 fallback, which keeps more than its Triton kernel), LoRA bf16, autocast
  full           the model's own loss over full (tokens x vocabulary) logits, LoRA fp32
  layer_eager, layer_lean   a step with an attention stand-in of FlexAttention's memory: HF's eager
                 layers, or liger-like RMSNorm/SwiGLU that keep only their inputs (patched into transformers
                 for the rest of the process: list it last). Compiled layers cannot be measured this way
                 (inductor's buffers are not allocated through python dispatch).
  loss_fused_chunkN, loss_checkpointed_chunkN   the LM head and loss alone (74% of --tokens trained
                 positions): fused (the default), or N positions at a time under checkpointing (before)

    python benchmarks/memory_train.py --layers 2 --tokens 2048
"""

from __future__ import annotations

import argparse
import gc
import sys
import weakref
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.sft import LOSS_CHUNK  # noqa: E402  the default, before a variant patches sft.LOSS_CHUNK

SHAPE_1B = dict(hidden_size=2048, intermediate_size=8192, num_attention_heads=32, num_key_value_heads=8,
                tie_word_embeddings=True, vocab_size=49152)
MB = 1e6


def live_tracker(existing):
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten
    from torch.utils.weak import WeakIdKeyDictionary

    class LiveBytes(TorchDispatchMode):
        """Bytes of the storages ops created and that are still alive; the peak and where it was."""

        def __init__(self, existing):
            super().__init__()
            self.seen = WeakIdKeyDictionary()
            for t in existing:  # the weights (and their views) are there before the step: not counted
                self.seen[t.untyped_storage()] = 0
            self.now = self.peak = 0
            self.phase, self.at = "", ""
            self.alive: dict[int, tuple[str, int]] = {}  # storage key -> (phase: op that made it, bytes)
            self.at_peak: dict[str, int] = {}
            self.key = 0

        def _free(self, key: int, n: int) -> None:
            self.now -= n
            self.alive.pop(key, None)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.device.type != "meta":
                    st = t.untyped_storage()
                    if st not in self.seen:
                        n = st.nbytes()
                        self.seen[st] = n
                        self.now += n
                        self.key += 1
                        self.alive[self.key] = (f"{self.phase}: {func}", n)
                        weakref.finalize(st, self._free, self.key, n)
                        if self.now > self.peak:
                            self.peak, self.at = self.now, f"{self.phase}: {func}"
                            self.at_peak = {}
                            for op, b in self.alive.values():
                                self.at_peak[op] = self.at_peak.get(op, 0) + b
            return out

    return LiveBytes(existing)


def saved_bytes(fn, existing):
    """Run fn() recording the storages autograd saves for the backward, but `existing`'s (the
    weights); (result, bytes)."""
    import torch

    seen: dict[int, int] = {}
    skip = {t.untyped_storage().data_ptr() for t in existing}

    def pack(t):
        if isinstance(t, torch.Tensor) and t.device.type != "meta" and t.untyped_storage().data_ptr() not in skip:
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def build(layers: int, lora_dtype, seed: int = 0, attn: str = "stand_in"):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.sft import add_lora, enable_checkpointing

    torch.manual_seed(seed)
    cfg = LlamaConfig(num_hidden_layers=layers, max_position_embeddings=8192, **SHAPE_1B)
    model = LlamaForCausalLM._from_config(cfg, dtype=torch.bfloat16, attn_implementation=attn)
    model.config.use_cache = False
    enable_checkpointing(model, {"use_reentrant": False})
    model.enable_input_require_grads()
    for p in model.parameters():
        p.requires_grad_(False)

    class Cfg:
        lora_r, lora_alpha, lora_dropout, target_modules = 16, 32, 0.05, "all-linear"

    model = add_lora(model, Cfg)
    for module in model.modules():  # as peft's 4-bit layers do under autocast: the input is not cast to fp32
        if hasattr(module, "cast_input_dtype_enabled"):
            module.cast_input_dtype_enabled = False
    if lora_dtype == torch.bfloat16:  # trl 1.16 SFTTrainer, quantised model: adapters to bf16
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.to(torch.bfloat16)
    model.train()
    return model


def param_table(model) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in model.parameters():
        key = f"{str(p.dtype).replace('torch.', '')} {'trainable' if p.requires_grad else 'frozen'}"
        out[key] = out.get(key, 0) + p.numel() * p.element_size() / MB
    return {k: round(v, 1) for k, v in sorted(out.items())}


def trl_loss_sum(model, batch):
    """trl 1.16's fused LM head: only positions with a next label, 4,096 x 32,768 logit tiles."""
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction
    from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

    from training.sft import weights_autocast

    base = model.get_base_model()
    labels = batch["labels"]
    with weights_autocast(base, labels.device.type):
        states = base.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).last_hidden_state
        hidden, lab = states[:, :-1], labels[:, 1:]
        mask = lab != -100
        head = base.get_output_embeddings()
        logp = ChunkedLogProbFunction.apply(hidden[mask], head.weight, None, lab[mask], 1.0,
                                            _CHUNKED_LOGPROB_CHUNK_SIZE, None, 1.0, ())[0]
    return -logp.sum(), int(mask.sum())


def full_loss_sum(model, batch):
    import torch

    from training.sft import weights_autocast

    with weights_autocast(model, "cpu"):
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
    lab = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), lab.flatten(), reduction="sum")
    return loss, int((lab != -100).sum())


def batch_tensors(batch):
    return [v for v in batch.values() if hasattr(v, "untyped_storage")]


def measure_loss(name: str, positions: int) -> dict:
    """The LM head and loss alone: `positions` trained hidden states (bf16) through the frozen
    bf16 head of the 1B shape, fused (training.sft.linear_cross_entropy_sum) or checkpointed chunks."""
    import torch

    from training import sft

    sft.LOSS_CHUNK = int(name.split("chunk")[1]) if "chunk" in name else LOSS_CHUNK
    sft.FUSED_LOSS = not name.startswith("loss_checkpointed")
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(0)  # the head's weights
    head = torch.nn.Linear(SHAPE_1B["hidden_size"], SHAPE_1B["vocab_size"], bias=False, dtype=torch.bfloat16).requires_grad_(False)
    hidden = torch.randn(positions, SHAPE_1B["hidden_size"], generator=g, dtype=torch.bfloat16).requires_grad_()
    targets = torch.randint(0, SHAPE_1B["vocab_size"], (positions,), generator=g)
    tracker = live_tracker([head.weight, hidden, targets])
    with tracker, torch.autocast("cpu", dtype=torch.bfloat16):
        tracker.phase = "forward"
        loss = sft.linear_cross_entropy_sum(head, hidden, targets)
        tracker.phase = "backward"
        loss.backward()
    top = sorted(tracker.at_peak.items(), key=lambda kv: -kv[1])[:8]
    return {"variant": name, "positions": positions, "chunk": sft.LOSS_CHUNK, "peak_step_mb": round(tracker.peak / MB, 1),
            "peak_at": tracker.at, "alive_at_peak_mb": {k: round(v / MB, 1) for k, v in top},
            "loss": round(float(loss.detach()) / positions, 4)}


def linear_attention_stand_in():
    """An attention stand-in with FlexAttention's memory (it keeps q, k, v and its output, no
    (T x T) scores), registered as "stand_in": CPU attention kernels would keep T x T scores, which
    the GPU path never has; the layer's other parts are what these variants compare."""
    from transformers import AttentionInterface

    def stand_in(module, query, key, value, attention_mask, **_):
        rep = query.shape[1] // key.shape[1]
        k, v = key.repeat_interleave(rep, 1), value.repeat_interleave(rep, 1)
        out = (query * k).sigmoid() * v  # (B, H, T, D): elementwise, keeps q, k, v like attention does
        return out.transpose(1, 2).contiguous(), None

    AttentionInterface.register("stand_in", stand_in)


def lean_norm_and_swiglu():
    """RMSNorm and SwiGLU that keep only their inputs for the backward (what liger's kernels keep),
    patched into transformers' Llama: to measure what HF's eager versions keep beyond that."""
    import torch
    from transformers.models.llama import modeling_llama as llama

    class Norm(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, eps):
            ctx.save_for_backward(x, w)
            ctx.eps = eps
            xf = x.float()
            return (w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype))

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            with torch.enable_grad():
                xx = x.detach().requires_grad_()
                xf = xx.float()
                y = w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + ctx.eps)).to(x.dtype)
                (gx,) = torch.autograd.grad(y, xx, g)
            return gx, None, None

    class SwiGLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            ctx.save_for_backward(a, b)
            return torch.nn.functional.silu(a) * b

        @staticmethod
        def backward(ctx, g):
            a, b = ctx.saved_tensors
            with torch.enable_grad():
                aa, bb = a.detach().requires_grad_(), b.detach().requires_grad_()
                ga, gb = torch.autograd.grad(torch.nn.functional.silu(aa) * bb, (aa, bb), g)
            return ga, gb

    llama.LlamaRMSNorm.forward = lambda self, x: Norm.apply(x, self.weight, self.variance_epsilon)
    llama.LlamaMLP.forward = lambda self, x: self.down_proj(SwiGLU.apply(self.gate_proj(x), self.up_proj(x)))


def measure_layer(name: str, layers: int, tokens: int) -> dict:
    """A step of `layers` decoder layers with the attention stand-in: eager HF layers (layer_eager)
    or liger-like lean RMSNorm/SwiGLU (layer_lean). Fused loss, LoRA fp32, checkpointing, as
    `dataprep train`."""
    import torch

    from training import sft

    linear_attention_stand_in()
    if name == "layer_lean":
        lean_norm_and_swiglu()
    model = build(layers, torch.float32)
    sft.LOSS_CHUNK, sft.FUSED_LOSS = LOSS_CHUNK, True
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, SHAPE_1B["vocab_size"], (1, tokens), generator=g)
    labels = ids.clone()
    labels[:, : tokens // 4] = -100
    batch = sft.with_target_index({"input_ids": ids, "labels": labels, "position_ids": torch.arange(tokens)[None]})
    existing = [*model.parameters(), *model.buffers(), *batch_tensors(batch)]
    tracker = live_tracker(existing)
    with tracker:
        tracker.phase = "forward"
        loss, n = sft.causal_lm_loss_sum(model, batch)
        tracker.phase = "backward"
        (loss / n).backward()
    top = sorted(tracker.at_peak.items(), key=lambda kv: -kv[1])[:12]
    return {"variant": name, "layers": layers, "tokens": tokens, "peak_step_mb": round(tracker.peak / MB, 1),
            "peak_at": tracker.at, "alive_at_peak_mb": {k: round(v / MB, 1) for k, v in top},
            "loss": round(float(loss.detach()) / n, 4)}


def measure(name: str, layers: int, tokens: int) -> dict:
    import torch

    from training import sft

    if name.startswith("layer_"):
        return measure_layer(name, layers, tokens)

    if name.startswith("loss_"):
        return measure_loss(name, int(tokens * 0.74))

    linear_attention_stand_in()
    lora = torch.bfloat16 if name in ("ours_bf16lora", "trl") else torch.float32
    model = build(layers, lora)
    sft.LOSS_CHUNK = int(name.split("chunk")[1]) if "chunk" in name else LOSS_CHUNK
    sft.FUSED_LOSS = True
    loss_fn = {"trl": trl_loss_sum, "full": full_loss_sum}.get(name, sft.causal_lm_loss_sum)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, SHAPE_1B["vocab_size"], (1, tokens), generator=g)
    labels = ids.clone()
    labels[:, : tokens // 4] = -100  # a quarter prompt: ~74% trained, as alpaca
    batch = {"input_ids": ids, "labels": labels, "position_ids": torch.arange(tokens)[None]}
    if loss_fn is sft.causal_lm_loss_sum:
        batch = sft.with_target_index(batch)
    params = param_table(model)
    existing = [*model.parameters(), *model.buffers(), *batch_tensors(batch)]
    (loss, n), saved = saved_bytes(lambda m=model: loss_fn(m, batch), existing)
    del loss
    gc.collect()
    tracker = live_tracker(existing)
    with tracker:
        tracker.phase = "forward"
        loss, n = loss_fn(model, batch)
        tracker.phase = "backward"
        (loss / n).backward()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None) / MB
    res = {"variant": name, "layers": layers, "tokens": tokens, "params_mb": params,
           "saved_for_backward_mb": round(saved / MB, 1), "peak_step_mb": round(tracker.peak / MB, 1),
           "peak_at": tracker.at, "lora_grads_mb": round(grads, 1), "loss": round(float(loss.detach()) / n, 4)}
    del model, loss, tracker
    gc.collect()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--variants", nargs="+", default=["ours", "ours_bf16lora", "ours_chunk256", "trl", "full"],
                    help="also ours_chunkN: N positions at a time")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import json

    import torch

    torch.set_num_threads(2)
    results = []
    for name in args.variants:
        res = measure(name, args.layers, args.tokens)
        print(json.dumps(res), flush=True)
        results.append(res)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
