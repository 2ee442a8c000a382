"""KTO (Kahneman-Tversky optimisation) with LoRA / QLoRA on kto shards: single answers labelled
desirable or undesirable, no pairs.

As trl's KTOTrainer (its `loss_type="kto"`): for a micro-batch of n examples with log-ratios
logr_i = log π(y_i|x_i) - log π_ref(y_i|x_i) (summed over the answer's tokens),
  z   = max(0, mean_i [log π(y_{i-1}|x_i) - log π_ref(y_{i-1}|x_i)])   (KL estimate from mismatched
        pairs: every prompt with the previous example's answer; detached)
  loss_i = λ_D (1 - σ(β (logr_i - z)))  if desirable,   λ_U (1 - σ(β (z - logr_i)))  if not,
and the loss is the mean over the examples. The examples and their mismatched pairs (2n sequences)
go through one padding-free forward, isolated as in DPO (training.dpo); the reference is the base
with the adapter disabled. Metrics: the loss, z (`kl`), `reward_accuracy` (share of examples whose
reward β logr has the sign of their label) and `reward_margin` (mean reward, negated for undesirable ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dataprep.options import opt
from dataprep.records import IGNORE_INDEX
from dataprep.stage import Manifest
from training.dpo import DPOConfig, Tally, collate_sequences, reference_logps, sequence_logps, train_preference


@dataclass(frozen=True)
class KTOOptions:
    desirable_weight: float = opt(1.0, "kto: weight λ_D of the desirable examples' loss.", min=0)
    undesirable_weight: float = opt(1.0, "kto: weight λ_U of the undesirable examples' loss.", min=0)


@dataclass(frozen=True)
class KTOConfig(KTOOptions, DPOConfig):
    """KTO takes DPO's options (--beta, LoRA/QLoRA, the loop) and its own weights."""


def _split(row: dict[str, Any]) -> int:
    """Tokens before the first trained one: the prompt."""
    return next((i for i, x in enumerate(row["labels"]) if x != IGNORE_INDEX), len(row["labels"]))


def collate_kto(rows: list[dict[str, Any]], pad_to=None, pad_id: int = 0) -> dict[str, Any]:
    """One flat batch: the n examples, then the n mismatched pairs (prompt i + answer of example
    i-1, as trl builds its KL completions), and the desirable flags."""
    import torch

    cuts = [_split(r) for r in rows]
    seqs = [(r["input_ids"], r["labels"]) for r in rows]
    for i, (r, k) in enumerate(zip(rows, cuts, strict=True)):
        prev, kp = rows[i - 1], cuts[i - 1]
        answer = prev["input_ids"][kp:]
        seqs.append((r["input_ids"][:k] + answer, [IGNORE_INDEX] * k + answer))
    batch = collate_sequences(seqs, pad_to, pad_id)
    return {**batch, "desirable": torch.tensor([bool(r["label"]) for r in rows]), "n_targets": len(rows)}


def kto_losses(logps, ref, kl_logps, ref_kl, desirable, beta: float, desirable_weight: float = 1.0,
               undesirable_weight: float = 1.0):
    """(per-example loss, reward β logr, z) as in the module doc."""
    import torch

    kl = (kl_logps - ref_kl).mean().detach().clamp(min=0)
    logr = logps - ref
    losses = torch.where(desirable, desirable_weight * (1 - torch.sigmoid(beta * (logr - kl))),
                         undesirable_weight * (1 - torch.sigmoid(beta * (kl - logr))))
    return losses, beta * logr.detach(), kl


def kto_loss_fn(cfg: KTOConfig, tally: Tally | None = None):
    """loss_sum(model, batch) -> (summed per-example loss, examples), for training.loop."""

    def loss_sum(model, batch):
        n = batch["n_targets"]
        logps, _ = sequence_logps(model, batch)
        ref = reference_logps(model, batch)
        desirable = batch["desirable"].to(logps.device)
        losses, rewards, kl = kto_losses(logps[:n], ref[:n], logps[n:], ref[n:], desirable, cfg.beta,
                                         cfg.desirable_weight, cfg.undesirable_weight)
        if tally is not None:
            sign = desirable.float() * 2 - 1
            tally.add(n, loss=losses, kl=kl.expand(n), reward_accuracy=((rewards > 0) == desirable).float(),
                      reward_margin=rewards * sign, logps=logps[:n].detach())
        return losses.sum(), n

    return loss_sum


def train_kto(shards: str, out: str, config: KTOConfig, force: bool = False) -> Manifest:
    """KTO on kto shards (see the module doc)."""
    return train_preference(shards, out, config, "kto", kto_loss_fn, collate_kto, force)
