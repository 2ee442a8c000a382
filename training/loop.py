"""The training loop shared by SFT and classification: accumulation, schedule, eval, logging.

Plain functions rather than a Trainer subclass, so that the padding-free batches and the
loss over trained tokens only stay visible in a few lines.
"""

from __future__ import annotations

import contextlib
import math
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dataprep.errors import DataprepError
from dataprep.options import opt


@dataclass(frozen=True)
class LoopConfig:
    """What every training run shares (the options: dataprep.options, through training.run.TrainOptions)."""

    micro_batch: int = opt(8, "Rows (packed rows for packed shards) per micro-batch.", min=1)
    grad_accum: int = opt(1, "Micro-batches per optimizer step.", min=1)
    lr: float = opt(2e-4, "Learning rate.", min=0, min_open=True)
    scheduler: str = opt("cosine", "Any transformers scheduler name.")
    warmup_ratio: float = opt(0.03, "Share of the steps spent warming up.", min=0, max=1)
    epochs: float = opt(1.0, "Passes over the shards.", min=0, min_open=True)
    max_steps: int = opt(-1, "Stop after this many optimizer steps (overrides --epochs; -1: no limit).", min=-1)
    eval_steps: int = opt(50, "Optimizer steps between evaluations.", min=1)
    seed: int = opt(42, "Seed of the shuffles, the eval split and the new weights.", min=0)
    report_to: Literal["tensorboard", "wandb", "none"] = opt("tensorboard", "Where the losses are logged.")
    weight_decay: float = opt(0.0, "AdamW weight decay.", min=0)
    eval_shards: str | None = opt(None, "Shards to evaluate on (instead of a split of the shards).", path="existing-dir")


@dataclass(frozen=True)
class LoraOptions:
    """LoRA's options, shared by SFT and classification (--lora)."""

    lora_r: int = opt(16, "LoRA rank.", min=1)
    lora_alpha: int = opt(32, "LoRA alpha (the update is scaled by alpha / r).", min=1)
    lora_dropout: float = opt(0.05, "Dropout on the LoRA input.", min=0, max=1)
    target_modules: str = opt("all-linear", "Comma-separated module names.")


@dataclass
class History:
    train: list[dict[str, float]] = field(default_factory=list)
    eval: list[dict[str, float]] = field(default_factory=list)
    tokens: int = 0
    trained_tokens: int = 0
    seconds: float = 0.0


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def make_optimizer(model, lr: float, weight_decay: float):
    """8-bit AdamW on CUDA, plain AdamW elsewhere. Not QLoRA's paged variant: bitsandbytes waits
    for the whole device (cudaDeviceSynchronize) once per paged parameter, 224 times per step on
    a 1B with LoRA on all linears (0.1 s a step on 2 GPUs, where the wait includes the gradient
    all-reduce); the LoRA weights' 8-bit states are tens of MB, nothing worth paging out."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if device() == "cuda":
        try:
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay), "adamw_8bit"
        except ImportError:
            pass
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay), "adamw_torch"


def total_steps(n_batches: int, cfg: LoopConfig, world: int = 1) -> int:
    """Optimizer steps: --max-steps, else the epochs over `n_batches` micro-batches (all ranks'),
    each step taking grad_accum micro-batches on each of `world` ranks."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    return max(1, math.ceil(n_batches * cfg.epochs / (cfg.grad_accum * world)))


class Logger:
    """TensorBoard by default, W&B when asked, or nothing."""

    def __init__(self, report_to: str, log_dir: Path, run_config: dict[str, Any]):
        self.tb = self.wandb = None
        if report_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(log_dir))
        elif report_to == "wandb":
            try:
                import wandb
            except ImportError:
                raise DataprepError("--report-to wandb needs the wandb package; pip install wandb") from None
            self.wandb = wandb.init(config=run_config, dir=str(log_dir))
        elif report_to != "none":
            raise DataprepError(f"--report-to {report_to!r} is not one of tensorboard, wandb, none")

    def log(self, values: dict[str, float], step: int) -> None:
        if self.tb:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb:
            self.wandb.log(values, step=step)

    def close(self) -> None:
        if self.tb:
            self.tb.close()
        if self.wandb:
            self.wandb.finish()


def peak_memory_gb() -> dict[str, float]:
    """Peak GPU memory allocated by torch (CUDA) and the process's peak resident memory."""
    import torch

    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_gb": round(rss_kb / (1 << 20) if sys.platform != "darwin" else rss_kb / (1 << 30), 3)}
    if torch.cuda.is_available():
        out["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
    return out


def epoch_batches(make_batches: Callable[[int], list], cfg: LoopConfig) -> Iterator[Any]:
    """Micro-batches epoch after epoch (reshuffled with seed + epoch) until the caller stops."""
    epoch = 0
    while True:
        yield from make_batches(cfg.seed + epoch)
        epoch += 1


def train_loop(
    model,
    make_batches: Callable[[int], list],
    loss_sum: Callable[[Any, dict], tuple[Any, int]],
    evaluate: Callable[[], dict[str, float]] | None,
    cfg: LoopConfig,
    logger: Logger,
    parallel: Any = None,
    offload: Any = None,
) -> History:
    """Run `total_steps` optimizer steps. `loss_sum(model, batch)` -> (summed loss, #targets);
    the loss of one step is normalised by the targets of all its micro-batches, on all ranks.

    Launched on several processes (training.dist), `make_batches` gives this rank's share and
    the model trains under DDP, or under `parallel` when the task wrapped it (FSDP). `offload`
    (training.offload.Offloader): the checkpointed layers' inputs wait in host memory."""
    import torch
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    from training import dist

    torch.manual_seed(cfg.seed)
    n_batches = int(dist.sum_across(len(make_batches(cfg.seed))))
    steps = total_steps(n_batches, cfg, dist.world())
    parallel = parallel or dist.wrap(model, loss_sum)
    optimizer, _ = make_optimizer(model, cfg.lr, cfg.weight_decay)
    scheduler = get_scheduler(cfg.scheduler, optimizer, int(cfg.warmup_ratio * steps), steps)
    hist = History()
    if evaluate:
        hist.eval.append({"step": 0, **evaluate()})
    batches = epoch_batches(make_batches, cfg)
    model.train()
    start = time.perf_counter()
    for step in tqdm(range(1, steps + 1), desc="train", unit="step", disable=None if dist.is_main() else True):
        step_start = time.perf_counter()
        done = train_step(model, [next(batches) for _ in range(cfg.grad_accum)], loss_sum, optimizer, scheduler,
                          parallel, offload)
        hist.tokens += done.tokens
        hist.trained_tokens += done.trained_tokens
        # seconds: the step's wall time (its losses are read back, so the device has finished it)
        row = {"step": step, "loss": done.loss, "lr": scheduler.get_last_lr()[0], "grad_norm": done.grad_norm,
               "seconds": round(time.perf_counter() - step_start, 4)}
        hist.train.append(row)
        logger.log({"train/loss": row["loss"], "train/lr": row["lr"]}, step)
        if evaluate and (step % cfg.eval_steps == 0 or step == steps):
            hist.seconds += time.perf_counter() - start
            hist.eval.append({"step": step, **evaluate()})
            logger.log({f"eval/{k}": v for k, v in hist.eval[-1].items() if k != "step"}, step)
            model.train()
            start = time.perf_counter()
    hist.seconds += time.perf_counter() - start
    return hist


@dataclass(frozen=True)
class Step:
    """What one optimizer step did: its loss per target, the gradient norm before clipping, the
    data tokens it saw and the tokens (or rows) it trained on."""

    loss: float
    grad_norm: float
    tokens: int
    trained_tokens: int


def train_step(model, micro_batches: list[dict[str, Any]], loss_sum: Callable[[Any, dict], tuple[Any, int]],
               optimizer, scheduler, parallel: Any = None, offload: Any = None) -> Step:
    """One optimizer step over `micro_batches` (gradient accumulation): each one's summed loss,
    normalised by the targets of all of them, is backpropagated; then the gradients are clipped
    to norm 1, and the optimizer and the schedule step.

    Under `parallel` (training.dist.wrap: DDP or FSDP on N ranks) the targets are counted on all
    ranks, and the loss is scaled by N because the gradient all-reduce averages over ranks: the
    gradients are then those of one process on the global batch (transformers#34242). The Step's
    loss and counts are global too.

    The host waits for the device once per step, at its end, when the loss and the norm are read
    back together. The targets and tokens are counted on the CPU batches: in one process they stay
    host ints; on several, their global sums are made on the device at the step's start (no
    blocking upload, training.dist.sum_on_device) and read back with the loss. The losses stay
    tensors until then.

    `offload` (training.offload.Offloader): each micro-batch's forward and backward run under it,
    so the checkpointed decoder layers' inputs wait in host memory."""
    import torch

    from training import dist

    local_targets = sum(count_targets(b) for b in micro_batches)  # CPU tensors: no device sync
    tokens = sum(real_tokens(b) for b in micro_batches)
    window = [to_device(b) for b in micro_batches]
    if parallel:
        targets, tokens = dist.sum_on_device([local_targets, tokens])  # stay on the device: no host sync
        scale = (dist.world() / targets.clamp(min=1)).float()
    else:
        targets, scale = local_targets, 1 / max(local_targets, 1)
    step_loss = None
    for i, batch in enumerate(window):
        with offload.around(model) if offload else contextlib.nullcontext():
            if parallel:
                with parallel.no_sync(i < len(window) - 1):
                    loss, _ = parallel(batch)
                    (loss * scale).backward()
            else:
                loss, _ = loss_sum(model, batch)
                (loss * scale).backward()
        step_loss = loss.detach() if step_loss is None else step_loss + loss.detach()
    norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if parallel:
        step_loss = dist.sum_on_device([step_loss])[0]
        read = torch.stack([x.double().to(norm.device) for x in (step_loss, norm, targets, tokens)]).tolist()
        step_loss, grad_norm, targets, tokens = read  # the one wait for the device
    else:  # the counts are host ints already
        step_loss, grad_norm = torch.stack([x.double().to(norm.device) for x in (step_loss, norm)]).tolist()
    return Step(step_loss / max(targets, 1), grad_norm, int(tokens), int(targets))


def real_tokens(batch: dict[str, Any]) -> int:
    """Tokens of the data in a batch: not padding, not a flat batch's filler sequence."""
    if "n_tokens" in batch:
        return batch["n_tokens"]
    return int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()


def count_targets(batch: dict[str, Any]) -> int:
    if "n_targets" in batch:  # preference pairs, unpaired examples: what the batch says it trains
        return batch["n_targets"]
    labels = batch["labels"]
    if labels.is_floating_point():  # classification: one target per row
        return labels.shape[0]
    return int((labels[:, 1:] != -100).sum())


def to_device(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch's tensors on the training device (CUDA: copied from pinned memory, without
    making the host wait)."""
    dev = device()
    if dev == "cpu":
        return dict(batch)
    return {k: _to(v, dev) for k, v in batch.items()}


def _to(value: Any, dev: str) -> Any:
    if not hasattr(value, "pin_memory"):
        return value
    if value.device.type == "cpu":
        value = value.pin_memory()
    return value.to(dev, non_blocking=True)


def plot_losses(hist: History, path: Path, title: str) -> None:
    """loss.png: training loss per step and eval loss at each eval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in hist.train], [r["loss"] for r in hist.train], label="train loss", lw=1)
    evals = [r for r in hist.eval if "loss" in r]
    if evals:
        ax.plot([r["step"] for r in evals], [r["loss"] for r in evals], "o-", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
