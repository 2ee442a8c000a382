"""DPO (and IPO) with LoRA / QLoRA on preference shards.

The reference model is the base with the adapter disabled (peft's `disable_adapter()`), so no
second copy of the weights is held. Chosen and rejected of every pair in a micro-batch go through
one forward pass, padding-free: all 2B sequences are concatenated into one row whose position_ids
restart at 0 per sequence (training.data.collate_flat), so they never attend to each other, as in
the SFT path. Only response tokens are scored: the shards' labels mask the prompt, and only
positions whose next label is trained reach the LM head (no full-vocabulary logits).

Losses (per pair; logr = policy log-prob minus reference log-prob of a response, summed over its tokens):
- sigmoid: -log σ(β (logr_chosen - logr_rejected))                               (DPO)
- ipo:     (logr_chosen/|chosen| - logr_rejected/|rejected| - 1/(2β))²            (IPO, trl's
           length-normalised form)
Metrics on train and eval: reward accuracy (share of pairs with β logr_chosen > β logr_rejected),
the margin (mean β (logr_chosen - logr_rejected)), and the chosen/rejected log-probabilities.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dataprep.options import opt
from dataprep.records import IGNORE_INDEX
from dataprep.stage import Manifest, Outcome, Workspace, run_stage
from training import data
from training.loop import Logger, LoopConfig, LoraOptions, device, peak_memory_gb, to_device, train_loop
from training.outputs import finish_run
from training.sft import SFTOptions


@dataclass(frozen=True)
class DPOOptions:
    """The options only preference training has (dataprep.options; through TrainOptions)."""

    beta: float = opt(0.1, "dpo/kto: strength of the pull towards the reference model (β).", min=0, min_open=True)
    dpo_loss: Literal["sigmoid", "ipo"] = opt("sigmoid", "dpo: sigmoid (DPO) or ipo (IPO, length-normalised).")


@dataclass(frozen=True)
class DPOConfig(DPOOptions, SFTOptions, LoraOptions, LoopConfig):
    model: str = "smollm2-135m"
    lr: float = 5e-5
    micro_batch: int = 4
    val_size: float = 0.0


# ---------------------------------------------------------------- batches and log-probabilities


def flat_padding(micro_batch: int, max_len: int, multiple: int | None = None):
    """`pad_to` of the flat batches under FlexAttention: the token count rounded up to a multiple of
    `multiple` (default: max-len, at most FLAT_BUCKET), at most micro_batch × 2 × max-len (every
    sequence at max-len). Padding every batch to that worst case instead made ~40% of each
    forward filler on dpo_en_demo (1,160 tokens a pair at max-len 1024)."""
    return data.buckets(multiple or min(max_len, FLAT_BUCKET), micro_batch * 2 * max_len)


FLAT_BUCKET = 1024


def prepare_flex(model, attn: str, micro_batch: int, max_len: int | None, compile_layers_too: bool = False):
    """What preference training does to the model and its flat batches for `attn`; returns `pad_to`.

    Under FlexAttention (CUDA) the decoder layers are compiled (training.sft.compile_layers) and the
    flat row is padded to a few bucket lengths (`flat_padding`): together 1.84x trl's DPOTrainer
    pairs/s at 0.89x its memory on a 1B QLoRA once compiled (benchmarks/RESULTS.md; the first steps
    on a fresh machine spend ~40 s compiling, paid back after ~1,300 pairs). Buckets with only transformers' own compiled
    flex_attention never finished a measurement (11 steps took over 5 minutes on a fresh H200), so
    there are no buckets without compiled layers. FlexAttention needs torch.compile in any case.
    Other attention (sdpa on CPU): no padding, layers compiled only when asked (--compile)."""
    from training.sft import compile_layers

    flex = attn == "flex_attention" and bool(max_len)
    if flex or compile_layers_too:
        compile_layers(model)
    return flat_padding(micro_batch, max_len) if flex else None


def collate_sequences(seqs: list[tuple[list[int], list[int]]], pad_to=None, pad_id: int = 0) -> dict:
    """(input_ids, labels) sequences as one padding-free row (training.data.collate_flat), plus
    `seq_index`: the sequence each position belongs to (a filler sequence, if any, comes last).
    `pad_to`: a length or a `data.buckets` rule (collate_flat)."""
    batch = data.collate_flat([{"input_ids": ids, "labels": labels} for ids, labels in seqs], pad_to, pad_id)
    batch["seq_index"] = (batch["position_ids"] == 0).long().cumsum(-1) - 1
    batch["n_seqs"] = len(seqs)
    return batch


def collate_pairs(rows: list[dict[str, Any]], pad_to=None, pad_id: int = 0) -> dict:
    """Preference rows -> one flat batch: the chosen sequences, then the rejected ones."""
    seqs = [(r["chosen_input_ids"], r["chosen_labels"]) for r in rows]
    seqs += [(r["rejected_input_ids"], r["rejected_labels"]) for r in rows]
    return {**collate_sequences(seqs, pad_to, pad_id), "n_targets": len(rows)}


LOGP_CHUNK = 1024  # trained positions projected at a time, under checkpointing


def _token_logps(head, hidden, targets):
    return head(hidden).float().log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)


def sequence_logps(model, batch: dict[str, Any]):
    """(summed log-probability of each sequence's trained tokens, their count), shape (n_seqs,).
    As in training.sft.causal_lm_loss_sum, only trained positions reach the LM head, a chunk at a time."""
    import torch
    from torch.utils.checkpoint import checkpoint

    from training.sft import weights_autocast

    labels = batch["labels"]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    targets = labels[:, 1:][keep[:, :-1]]
    owner = batch["seq_index"][keep]
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone, head = getattr(base, base.base_model_prefix), base.get_output_embeddings()
    inputs = {k: batch[k] for k in ("input_ids", "position_ids") if k in batch}
    with weights_autocast(base, labels.device.type):
        hidden = backbone(**inputs, use_cache=False).last_hidden_state[keep]
        parts = [checkpoint(_token_logps, head, h, t, use_reentrant=False) if h.requires_grad else _token_logps(head, h, t)
                 for h, t in zip(hidden.split(LOGP_CHUNK), targets.split(LOGP_CHUNK), strict=True)]
    token_logps = torch.cat(parts) if parts else hidden.float().sum(-1)
    n = batch["n_seqs"]
    logps = torch.zeros(n, dtype=torch.float32, device=labels.device).index_add(0, owner, token_logps)
    counts = torch.zeros(n, dtype=torch.float32, device=labels.device).index_add(0, owner, torch.ones_like(token_logps))
    return logps, counts


def reference_logps(model, batch: dict[str, Any]):
    """`sequence_logps` of the base model: the adapter disabled, no gradient."""
    import torch

    with torch.no_grad(), model.disable_adapter():
        return sequence_logps(model, batch)[0]


# ---------------------------------------------------------------- the loss


def dpo_losses(chosen, rejected, ref_chosen, ref_rejected, beta: float, loss: str = "sigmoid",
               chosen_len=None, rejected_len=None):
    """(per-pair loss, chosen rewards, rejected rewards) from summed response log-probs."""
    import torch.nn.functional as F

    chosen_logr, rejected_logr = chosen - ref_chosen, rejected - ref_rejected
    if loss == "sigmoid":
        losses = -F.logsigmoid(beta * (chosen_logr - rejected_logr))
    elif loss == "ipo":
        delta = chosen_logr / chosen_len.clamp(min=1) - rejected_logr / rejected_len.clamp(min=1)
        losses = (delta - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss {loss!r}")
    return losses, beta * chosen_logr.detach(), beta * rejected_logr.detach()


class Tally:
    """Sums of per-example metrics between two reads (train: one optimizer step; eval: the eval set)."""

    def __init__(self):
        self.sums: dict[str, float] = defaultdict(float)
        self.n = 0

    def add(self, n: int, **values) -> None:
        self.n += n
        for k, v in values.items():
            self.sums[k] += float(v.detach().float().sum())

    def pop(self) -> dict[str, float]:
        out = {k: v / max(self.n, 1) for k, v in self.sums.items()}
        self.sums, self.n = defaultdict(float), 0
        return out


def pair_metrics(tally: Tally, losses, chosen_rewards, rejected_rewards, chosen, rejected) -> None:
    tally.add(len(losses), loss=losses, reward_accuracy=(chosen_rewards > rejected_rewards).float(),
              reward_margin=chosen_rewards - rejected_rewards, rewards_chosen=chosen_rewards,
              rewards_rejected=rejected_rewards, logps_chosen=chosen, logps_rejected=rejected)


def dpo_loss_fn(cfg: DPOConfig, tally: Tally | None = None):
    """loss_sum(model, batch) -> (summed per-pair loss, pairs), for training.loop."""

    def loss_sum(model, batch):
        n = batch["n_targets"]
        logps, counts = sequence_logps(model, batch)
        ref = reference_logps(model, batch)
        losses, rc, rr = dpo_losses(logps[:n], logps[n:], ref[:n], ref[n:], cfg.beta, cfg.dpo_loss, counts[:n], counts[n:])
        if tally is not None:
            pair_metrics(tally, losses, rc, rr, logps[:n], logps[n:])
        return losses.sum(), n

    return loss_sum


def evaluate_with(loss_sum, tally: Tally, model, batches: list) -> dict[str, float]:
    """Run `loss_sum` over the eval batches (no gradient) and return what it tallied."""
    import torch

    model.eval()
    tally.pop()
    with torch.no_grad():
        for batch in batches:
            loss_sum(model, to_device(batch))
    return tally.pop()


class TallyLogger:
    """A Logger that adds the metrics tallied during each optimizer step to its train/loss line,
    and keeps them (`rows`) for metrics.json."""

    def __init__(self, logger: Logger, tally: Tally):
        self.logger, self.tally, self.rows = logger, tally, {}

    def log(self, values: dict[str, float], step: int) -> None:
        if "train/loss" in values:
            metrics = {k: v for k, v in self.tally.pop().items() if k != "loss"}
            self.rows[step] = metrics
            values = {**values, **{f"train/{k}": v for k, v in metrics.items()}}
        self.logger.log(values, step)

    def close(self) -> None:
        self.logger.close()

    def merge_into(self, rows: list[dict[str, float]]) -> None:
        for row in rows:
            row.update(self.rows.get(row["step"], {}))


def plot_with_accuracy(hist, path: Path, title: str, key: str = "reward_accuracy") -> None:
    """loss.png: train/eval loss per step, and `key` (train and eval) on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in hist.train], [r["loss"] for r in hist.train], label="train loss", lw=1)
    ax.plot([r["step"] for r in hist.eval], [r["loss"] for r in hist.eval], "o-", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    acc = ax.twinx()
    acc.plot([r["step"] for r in hist.train if key in r], [r[key] for r in hist.train if key in r], color="tab:green",
             lw=1, alpha=0.6, label=f"train {key.replace('_', ' ')}")
    acc.plot([r["step"] for r in hist.eval if key in r], [r[key] for r in hist.eval if key in r], "s--",
             color="tab:red", label=f"eval {key.replace('_', ' ')}")
    acc.set_ylabel(key.replace("_", " "))
    acc.set_ylim(-0.02, 1.02)
    lines = ax.get_legend_handles_labels()
    more = acc.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- the stage


def train_preference(shards: str, out: str, config, task: str, loss_fn, collate_rows, force: bool = False) -> Manifest:
    """LoRA/QLoRA preference training (dpo, kto) on `shards`: `loss_fn(config, tally)` makes the
    loss, `collate_rows(rows, pad_to, pad_id)` the flat batches. Writes the adapter and tokenizer,
    metrics.json, loss.png (with reward accuracy) and runs/ to `out`."""
    from training.sft import (
        _prepare,
        add_lora,
        attn_implementation,
        checkpoint_offloader,
        input_pad_id,
        load_model,
        use_bf16,
    )

    train_set, eval_set, manifest, tokenizer, model_path, quant = _prepare(shards, config, task)

    def build(ws: Workspace) -> Outcome:
        bf16 = use_bf16(config, quant)
        lineage = manifest.lineage
        attn = attn_implementation(config, True)
        model = add_lora(load_model(model_path, quant, bf16, attn, config.gradient_checkpointing, config.kbit_upcast),
                         config)
        pad_to = prepare_flex(model, attn, config.micro_batch, lineage.max_len, config.compile)
        trainable, total = model.get_nb_trainable_parameters()
        vocab = model.get_input_embeddings().num_embeddings
        pad = input_pad_id(lineage, vocab)

        def make(dataset):
            return data.batcher(dataset, config.micro_batch, lambda rows: collate_rows(rows, pad_to, pad))

        train_tally, eval_tally = Tally(), Tally()
        train_loss, eval_loss = loss_fn(config, train_tally), loss_fn(config, eval_tally)
        eval_batches = make(eval_set)(config.seed) if eval_set is not None else None
        logger = TallyLogger(Logger(config.report_to, ws.out / "runs", dataclasses.asdict(config)), train_tally)
        offload = checkpoint_offloader(config)
        with ws.timer("train"):
            hist = train_loop(model, make(train_set), train_loss,
                              (lambda: evaluate_with(eval_loss, eval_tally, model, eval_batches)) if eval_batches else None,
                              config, logger, offload=offload)
        logger.close()
        logger.merge_into(hist.train)
        examples = hist.trained_tokens  # train_step counts n_targets: pairs (dpo) or examples (kto)
        metrics = {
            "train_loss": hist.train,
            "eval_curve": hist.eval,
            "steps": len(hist.train),
            "tokens": hist.tokens,
            "trained_examples": examples,
            "train_seconds": round(hist.seconds, 3),
            "examples_per_s": round(examples / max(hist.seconds, 1e-9), 2),
            "tokens_per_s": round(hist.tokens / max(hist.seconds, 1e-9), 1),
            "trainable_params": int(trainable),
            "total_params": int(total),
            "quant": quant,
            "bf16": bf16,
            "attn_implementation": attn,
            "device": device(),
            **peak_memory_gb(),
            **(offload.metrics() if offload else {}),  # as SFT's: the last micro-batch's layer inputs moved
        }
        method = "QLoRA" if quant == "4bit" else "LoRA"
        plot_with_accuracy(hist, ws.out / "loss.png", f"{task.upper()} {config.model} ({method} r{config.lora_r}, β {config.beta})")
        return finish_run(ws, model, tokenizer, metrics, task=task, config=config, model_path=model_path,
                          train_set=train_set, eval_set=eval_set)

    return run_stage("train", out, inputs=[p for p in (shards, config.eval_shards) if p],
                     config={**dataclasses.asdict(config), "quant": quant, "task": task}, build=build,
                     data_files=("adapter_config.json", "metrics.json"), force=force, upstream=manifest)


def train_dpo(shards: str, out: str, config: DPOConfig, force: bool = False) -> Manifest:
    """DPO / IPO on preference shards (see the module doc)."""
    return train_preference(shards, out, config, "dpo", dpo_loss_fn, collate_pairs, force)
