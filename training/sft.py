"""LoRA / QLoRA supervised fine-tuning on the shards of `dataprep tokenize`.

QLoRA (`quant="4bit"`, the default on CUDA): NF4 with double quantisation, bf16 compute and
bf16 quant storage, `prepare_model_for_kbit_training`, non-reentrant gradient checkpointing,
8-bit AdamW on CUDA. Packed shards train padding-free (see training/data.py). The loss
projects only the hidden states of trained positions onto the vocabulary, so no
full-vocabulary logits are ever built.

Outputs in OUT: the adapter and tokenizer, metrics.json, loss.png, manifest.json, runs/ (TensorBoard).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from dataclasses import dataclass
from typing import Any, Literal

from dataprep import io
from dataprep.errors import DataprepError
from dataprep.models import save_tokenizer
from dataprep.options import opt
from dataprep.records import IGNORE_INDEX
from dataprep.stage import Lineage, Manifest, Outcome, Workspace, run_stage
from training import data, dist
from training.loop import Logger, LoopConfig, LoraOptions, device, peak_memory_gb, plot_losses, train_loop


@dataclass(frozen=True)
class SFTOptions:
    """The options only SFT has (dataprep.options; `dataprep train` takes them through TrainOptions)."""

    quant: Literal["auto", "4bit", "none"] = opt(
        "auto", "sft: 4bit = QLoRA (NF4, double quant, bf16); auto = 4bit on CUDA, none elsewhere.")
    group_by_length: bool = opt(False, "sft, unpacked: batch rows of similar length (less padding).")
    gradient_checkpointing: bool = opt(True, "sft: keep activations instead of recomputing them (faster, more memory).")
    kbit_upcast: bool = opt(False, "sft 4bit: keep embeddings, norms and LM head in fp32 (peft's default; slower, "
                            "more memory) instead of bf16 under autocast.")
    compile: bool = opt(False, "sft/dpo/kto: torch.compile each decoder layer with any attention (under FlexAttention, "
                        "the CUDA default for packed shards, they always are).")
    bf16: Literal["auto", "yes", "no"] = opt("auto", "sft: bf16 weights and autocast; auto: where supported.")
    # auto: flex_attention for packed shards on CUDA, else sdpa
    attn_implementation: str = opt("auto", "sft attention: auto, sdpa, eager, flex_attention.", name="attn")
    fsdp: bool = opt(False, "sft on several processes: shard the model with FSDP2 (a model too big for one GPU) "
                     "instead of DDP.")
    offload_checkpoints: Literal["auto", "yes", "no"] = opt(
        "auto", "sft/dpo/kto on CUDA with gradient checkpointing: keep each decoder layer's saved input in pinned host "
        "memory until the backward (less GPU memory, copies overlapped); auto: on CUDA, not under --fsdp. Host memory "
        "held per process: layers x tokens x hidden x 2 bytes (8B at 64k tokens a micro-batch: 17 GB); where pinning "
        "fails the input stays on the GPU.")


@dataclass(frozen=True)
class SFTConfig(SFTOptions, LoraOptions, LoopConfig):
    model: str = "smollm2-135m"
    val_size: float = 0.0


def resolved_quant(cfg: SFTConfig) -> str:
    quant = ("4bit" if device() == "cuda" else "none") if cfg.quant == "auto" else cfg.quant
    if quant not in ("4bit", "none"):
        raise DataprepError(f"--quant {quant!r} is not one of 4bit, none, auto")
    if quant == "4bit" and importlib.util.find_spec("bitsandbytes") is None:
        raise DataprepError("--quant 4bit needs bitsandbytes; pip install 'bitsandbytes>=0.45' or pass --quant none")
    return quant


def use_bf16(cfg: SFTConfig, quant: str) -> bool:
    import torch

    if cfg.bf16 in ("yes", "no"):
        return cfg.bf16 == "yes"
    return quant == "4bit" or (torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def checkpoint_offloader(cfg: SFTOptions):
    """A training.offload.Offloader for the training step when --offload-checkpoints asks for one
    and the layers are checkpointed; else None (nothing installed). auto: on CUDA, unless FSDP
    shards the model (not measured there). One H200, 8B QLoRA at 8,192 tokens a step: peak 9.56 ->
    7.77 GB at the same step time (0.774 vs 0.776 s; benchmarks/RESULTS.md)."""
    on = (device() == "cuda" and not cfg.fsdp) if cfg.offload_checkpoints == "auto" else cfg.offload_checkpoints == "yes"
    if not (on and cfg.gradient_checkpointing):
        return None
    from training.offload import Offloader

    return Offloader()


def attn_implementation(cfg: SFTConfig, packed: bool) -> str:
    if cfg.attn_implementation != "auto":
        return cfg.attn_implementation
    return "flex_attention" if packed and device() == "cuda" else "sdpa"


QUANT_STORAGE = "bfloat16"  # 4-bit weights are packed into bf16 tensors (FSDP shards them as such)


def load_model(path: str, quant: str, bf16: bool, attn: str, gradient_checkpointing: bool,
               kbit_upcast: bool = False):
    """The base causal LM, 4-bit quantised and prepared for k-bit training when asked.

    `prepare_model_for_kbit_training` upcasts every non-quantised weight (embeddings, norms, the
    LM head) to fp32, which makes the whole residual stream fp32: twice the activation memory and
    fp32 matmuls in the head. Unless `kbit_upcast`, those frozen weights go back to bf16 and the
    loss runs under bf16 autocast (`causal_lm_loss_sum`), while the LoRA weights stay fp32.
    """
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = torch.bfloat16 if bf16 else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": attn}
    if quant == "4bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_quant_storage=getattr(torch, QUANT_STORAGE),
        )
        if device() == "cuda":  # this rank's GPU (the current device), not always cuda:0
            kwargs["device_map"] = {"": torch.cuda.current_device()}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if device() == "cuda" and quant != "4bit":
        model.to("cuda")
    model.config.use_cache = False
    gc_kwargs = {"use_reentrant": False}
    if quant == "4bit":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing, gradient_checkpointing_kwargs=gc_kwargs
        )
        if bf16 and not kbit_upcast:
            for p in model.parameters():
                if p.dtype == torch.float32 and not p.requires_grad:
                    p.data = p.data.to(torch.bfloat16)
    elif gradient_checkpointing:
        enable_checkpointing(model, gc_kwargs)
        model.enable_input_require_grads()
    return model


def enable_checkpointing(model, gc_kwargs: dict[str, Any]) -> None:
    if hasattr(model, "activation_checkpointing_enable"):  # the newer name in transformers 5
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=gc_kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)


def add_lora(model, cfg: SFTConfig, task_type: str = "CAUSAL_LM", modules_to_save: list[str] | None = None,
             exclude_modules: list[str] | None = None):
    from peft import LoraConfig, get_peft_model

    targets: Any = cfg.target_modules if cfg.target_modules == "all-linear" else cfg.target_modules.split(",")
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        task_type=task_type,
        modules_to_save=modules_to_save,
        exclude_modules=exclude_modules,
    )
    return get_peft_model(model, lora)


def compile_layers(model) -> None:
    """torch.compile each decoder layer in place (fuses norms, RoPE, activations and the LoRA adds).
    The compiled kernels persist in the dataprep cache (`persistent_compile_cache`)."""
    persistent_compile_cache()
    for layer in dist.decoder_layers(model):
        layer.compile()


def persistent_compile_cache() -> None:
    """Keep torch.compile's caches (inductor's FX graph and autograd caches, the Triton kernels) in
    `$DATAPREP_CACHE/torch-compile` rather than /tmp, so a later run, a new process, or the other
    ranks of a launch load the kernels instead of compiling them again. TORCHINDUCTOR_CACHE_DIR
    set by the user wins."""
    import os

    from dataprep.models import cache_dir

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "torch-compile"))


def weights_autocast(model, device_type: str):
    """bf16 (fp16) autocast when the frozen weights are bf16 (fp16), see load_model: the fp32 LoRA
    weights then compute in bf16 too, and peft skips its input casts. A no-op for fp32 models."""
    import torch

    low = model.get_input_embeddings().weight.dtype
    return torch.autocast(device_type, dtype=low, enabled=low in (torch.bfloat16, torch.float16))


LOSS_CHUNK = 512  # trained positions projected onto the vocabulary at a time (1B shape: 0.2 GB of logits and their gradient)
FUSED_LOSS = True  # False: the loss before the fused one, checkpointed chunks (benchmarks and tests switch it)


@functools.cache
def _fused_linear_cross_entropy():
    """The autograd.Function behind `linear_cross_entropy_sum` (built on first use: torch is imported late)."""
    import torch
    from torch.autograd.function import once_differentiable

    class FusedLinearCrossEntropy(torch.autograd.Function):
        """sum(cross_entropy(hidden @ weight.T + bias, targets)), `chunk` rows at a time, with the
        gradients computed in the forward (as liger's fused linear cross-entropy does): one chunk's
        fp32 logits are alive at a time, turned into their gradient in place, and the backward only
        scales what the forward kept (no second projection, nothing of the logits saved).
        `grad_enabled` is torch.is_grad_enabled() at the call (inside forward it is always off):
        under no_grad nothing but the loss is computed."""

        @staticmethod
        def forward(ctx, hidden, weight, bias, targets, chunk, grad_enabled):
            need_h, need_w, need_b = (grad_enabled and need for need in ctx.needs_input_grad[:3])
            grad_h = torch.empty_like(hidden) if need_h else None
            acc = torch.promote_types(hidden.dtype, torch.float32)  # fp32, or fp64 for fp64 inputs
            grad_w = torch.zeros_like(weight, dtype=acc) if need_w else None
            grad_b = torch.zeros_like(bias, dtype=acc) if need_b else None
            loss = torch.zeros((), dtype=acc, device=hidden.device)
            for start in range(0, hidden.shape[0], chunk):
                h, t = hidden[start:start + chunk], targets[start:start + chunk]
                low = torch.nn.functional.linear(h, weight, bias)  # bf16 under autocast
                low_dtype, logits = low.dtype, low.to(acc)
                del low
                rows = torch.arange(t.numel(), device=t.device)
                top = logits.amax(-1, keepdim=True)
                target_logit = logits[rows, t]
                probs = logits.sub_(top).exp_()  # in place: the only (chunk x vocab) fp32 buffer
                total = probs.sum(-1, keepdim=True)
                loss += (total.log().squeeze(-1) + top.squeeze(-1) - target_logit).sum()
                grad = None
                if need_h or need_w or need_b:
                    grad = probs.div_(total)
                    grad[rows, t] -= 1  # d loss / d logits = softmax - one-hot
                    if need_b:
                        grad_b += grad.sum(0)
                    grad = grad.to(low_dtype)  # the logits' dtype: bf16 under autocast, as the matmuls below
                    if need_h:
                        grad_h[start:start + chunk] = grad @ weight
                    if need_w:
                        grad_w += grad.t() @ h  # bf16 under autocast, summed over chunks in the fp32 buffer
                del logits, probs, grad  # before the next chunk: its logits and this gradient never coexist
            ctx.save_for_backward(*(g for g in (grad_h, grad_w, grad_b) if g is not None))
            ctx.has, ctx.dtypes = (need_h, need_w, need_b), (hidden.dtype, weight.dtype, bias.dtype if need_b else None)
            return loss

        @staticmethod
        @once_differentiable
        def backward(ctx, grad_out):
            saved = iter(ctx.saved_tensors)
            grads = [(next(saved) * grad_out).to(dtype) if has else None for has, dtype in zip(ctx.has, ctx.dtypes, strict=True)]
            return (*grads, None, None, None)

    return FusedLinearCrossEntropy


def linear_cross_entropy_sum(head, hidden, targets):
    """Summed cross-entropy of `head(hidden)` against `targets`, LOSS_CHUNK positions at a time,
    gradients computed in the forward (`_fused_linear_cross_entropy`); a head that is not a plain
    Linear (a LoRA-wrapped one), or FUSED_LOSS off, goes through checkpointed chunks instead.
    `targets` must be class ids in [0, vocabulary): no ignore index (-100), which the fused path
    would read as a column from the end (not checked: that would wait for the device); callers
    pass only trained positions."""
    import torch
    from torch.utils.checkpoint import checkpoint

    if FUSED_LOSS and type(head) is torch.nn.Linear:
        return _fused_linear_cross_entropy().apply(hidden, head.weight, head.bias, targets, LOSS_CHUNK,
                                                   torch.is_grad_enabled())
    loss = hidden[:0].float().sum()  # 0, but in the graph even when nothing in the batch is trained
    for h, t in zip(hidden.split(LOSS_CHUNK), targets.split(LOSS_CHUNK), strict=True):
        if h.requires_grad:
            loss = loss + checkpoint(_chunk_loss_sum, head, h, t, use_reentrant=False)
        else:
            loss = loss + _chunk_loss_sum(head, h, t)
    return loss


def _chunk_loss_sum(head, hidden, targets):
    import torch

    return torch.nn.functional.cross_entropy(head(hidden).float(), targets, reduction="sum")


def causal_lm_loss_sum(model, batch: dict[str, Any]):
    """(summed cross-entropy over trained tokens, their count).

    Only positions whose next label is trained reach the LM head, which avoids the
    (tokens x vocabulary) logits of a full forward, and they reach it LOSS_CHUNK at a time with
    the gradient computed in the forward (`linear_cross_entropy_sum`), so at most one chunk's fp32
    logits are alive.
    The backbone and the head are called separately (not `logits_to_keep=mask`, which
    transformers before 5.2x only takes as an int). A flat batch from `causal_batches` carries
    those positions (`target_index`, found on the CPU), so the forward never waits for the device
    to find them (a boolean mask on the GPU would: its size is read back mid-forward).
    """
    import torch

    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(base, base.base_model_prefix)
    head = base.get_output_embeddings()
    with weights_autocast(base, labels.device.type):
        # use_cache=False: with a cache, transformers skips detecting packed sequences from position_ids
        states = backbone(**inputs, use_cache=False).last_hidden_state
        if "target_index" in batch:  # a flat batch (one row): positions and their next tokens
            index = batch["target_index"]
            hidden, targets = states[0].index_select(0, index), labels[0].index_select(0, index + 1)
        else:
            keep = torch.zeros_like(labels, dtype=torch.bool)
            keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
            hidden, targets = states[keep], labels[:, 1:][keep[:, :-1]]
        loss = linear_cross_entropy_sum(head, hidden, targets)
    return loss, int(targets.numel())


def with_target_index(batch: dict[str, Any]) -> dict[str, Any]:
    """A flat batch plus `target_index`: the positions whose next label is trained (found here, on
    the CPU, for causal_lm_loss_sum), and `n_targets`, their count (training.loop.count_targets)."""
    import torch

    labels = batch["labels"][0]
    index = torch.nonzero(labels[1:] != IGNORE_INDEX).flatten()
    return {**batch, "target_index": index, "n_targets": int(index.numel())}


def input_pad_id(lineage: Lineage, vocab_size: int | None = None) -> int:
    """The id padded positions get. They are attention-masked and unlabelled, so any id in the
    model's vocabulary works: a pad token that tokenize added (beyond the embeddings) becomes EOS
    rather than forcing an embedding resize that the adapter would then have to carry."""
    tok = lineage.tokenizer
    pad = tok.pad_token_id if tok else None
    if pad is None or (vocab_size is not None and pad >= vocab_size):
        pad = (tok.eos_token_id if tok else None) or 0
    return pad


def causal_batches(dataset, lineage: Lineage, micro_batch: int, group_by_length: bool,
                   vocab_size: int | None = None, static_len: int | None = None, shard: bool = False):
    """seed -> list of collated micro-batches (padding-free for packed shards, padded otherwise).
    `static_len` pads every flat batch to that many tokens with one filler sequence (FlexAttention
    is compiled, and a new length per batch would recompile it). `shard`: this rank's share."""
    pad = input_pad_id(lineage, vocab_size)

    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        if lineage.packed:
            return with_target_index(data.collate_flat(rows, static_len, pad))
        return data.collate_padded(rows, pad)

    return data.batcher(dataset, micro_batch, collate, group_by_length, shard)


def eval_loss(model, batches: list, loss_sum=None) -> dict[str, float]:
    """Mean cross-entropy per trained token over the eval batches (`loss_sum`: causal_lm_loss_sum; each
    rank's share, summed across ranks)."""
    import torch

    from training.loop import to_device

    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            loss, count = (loss_sum or causal_lm_loss_sum)(model, to_device(batch))
            total, n = total + float(loss), n + count
    total, n = dist.reduce([total, n])
    return {"loss": total / max(n, 1), "tokens": int(n)}


def _prepare(shards: str, cfg: SFTConfig, task: str = "sft"):
    """Everything checked before any model loads: shards, task, tokenizer, eval split, quant."""
    train_set, eval_set, manifest, tokenizer, model_path = data.prepare_run(shards, cfg, task)
    quant = resolved_quant(cfg)
    if cfg.fsdp and dist.world() > 1:  # one process: --fsdp has nothing to shard
        import torch

        dist.check_fsdp_quant(torch.bfloat16 if use_bf16(cfg, quant) else torch.float32, quant, QUANT_STORAGE)
    return train_set, eval_set, manifest, tokenizer, model_path, quant


def train_sft(shards: str, out: str, config: SFTConfig, force: bool = False) -> Manifest:
    """Fine-tune `config.model` with LoRA (or QLoRA) on the shards; write the adapter to `out`.

    Returns the manifest (the metrics are in OUT/metrics.json), with `skipped` set when an
    up-to-date output already exists and `force` is false.
    """
    dist.setup()
    train_set, eval_set, manifest, tokenizer, model_path, quant = _prepare(shards, config)
    # the processes decide the global batch (micro_batch x grad_accum x processes), so the output
    stage_config = {**dataclasses.asdict(config), "quant": quant, "processes": dist.world()}

    def build(ws: Workspace) -> Outcome:
        import torch

        bf16 = use_bf16(config, quant)
        shards_lineage = manifest.lineage
        attn = attn_implementation(config, bool(shards_lineage.packed))
        model = load_model(model_path, quant, bf16, attn, config.gradient_checkpointing, config.kbit_upcast)
        torch.manual_seed(config.seed)  # the LoRA weights: the same on every rank, and run after run
        model = add_lora(model, config)
        if config.compile or attn == "flex_attention":  # as DPO does: FlexAttention is compiled anyway
            compile_layers(model)
        trainable, total = model.get_nb_trainable_parameters()
        vocab = model.get_input_embeddings().num_embeddings
        max_len = shards_lineage.max_len
        static = config.micro_batch * max_len if attn == "flex_attention" and max_len else None
        make_train = causal_batches(train_set, shards_lineage, config.micro_batch, config.group_by_length, vocab, static,
                                    shard=True)
        make_eval = causal_batches(eval_set, shards_lineage, config.micro_batch, False, vocab, static,
                                   shard=True) if eval_set else None
        eval_batches = make_eval(config.seed) if make_eval else None
        # FSDP: the sharded model runs only through its wrapper, evaluation included
        parallel = dist.wrap(model, causal_lm_loss_sum, "fsdp") if config.fsdp else None
        eval_sum = (lambda _, batch: parallel(batch)) if parallel else causal_lm_loss_sum
        logger = Logger(config.report_to if dist.is_main() else "none", ws.out / "runs", dataclasses.asdict(config))
        offload = checkpoint_offloader(config)
        with ws.timer("train"):
            hist = train_loop(
                model, make_train, causal_lm_loss_sum,
                (lambda: eval_loss(model, eval_batches, eval_sum)) if eval_batches is not None else None,
                config, logger, parallel=parallel, offload=offload,
            )
        logger.close()
        seconds = dist.reduce([hist.seconds], "max")[0]  # the slowest rank's
        metrics = {
            "train_loss": hist.train,
            "eval_loss": hist.eval,
            "steps": len(hist.train),
            "tokens": hist.tokens,
            "trained_tokens": hist.trained_tokens,
            "train_seconds": round(seconds, 3),
            "tokens_per_s": round(hist.tokens / max(seconds, 1e-9), 1),
            "trained_tokens_per_s": round(hist.trained_tokens / max(seconds, 1e-9), 1),
            "trainable_params": int(trainable),
            "total_params": int(total),
            "quant": quant,
            "bf16": bf16,
            "attn_implementation": attn,
            "packed": bool(shards_lineage.packed),
            "device": device(),
            "processes": dist.world(),
            "parallel": ("fsdp" if config.fsdp else "ddp") if dist.world() > 1 else "none",
            **dist.max_across(peak_memory_gb()),
            **(offload.metrics() if offload else {}),  # the last micro-batch's layer inputs, those kept on the GPU
        }
        state = dist.full_state_dict(model) if config.fsdp else None
        if not dist.is_main():
            return Outcome(0, 0)
        model.save_pretrained(ws.out, state_dict=state)
        save_tokenizer(tokenizer, ws.out)
        io.write_json(ws.out / "metrics.json", metrics)
        plot_losses(hist, ws.out / "loss.png", f"SFT {config.model} ({'QLoRA' if quant == '4bit' else 'LoRA'} r{config.lora_r})")
        n = len(train_set) + (len(eval_set) if eval_set is not None and not config.eval_shards else 0)
        details = dict(base_model_path=model_path,
                       metrics={k: v for k, v in metrics.items() if k not in ("train_loss", "eval_loss")})
        return Outcome(n, n, details, lineage={"task": "sft", "base_model": config.model})

    return dist.run_stage_on_main(
        run_stage, build, stage="train", out=out, inputs=[p for p in (shards, config.eval_shards) if p],
        config=stage_config, data_files=("adapter_config.json", "metrics.json"), force=force, upstream=manifest)
