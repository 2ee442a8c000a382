"""`train(shards, out, **options)`: the one entry point behind `dataprep train` and recipes'
`train:` section. Its options are the fields of TrainOptions (CLI flags and recipe keys come
from the same declaration, dataprep.options), and it dispatches to SFT or classification."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from dataprep.options import opt, parse_options
from dataprep.stage import Manifest
from training.classify import ClassifyConfig, ClassifyOptions, train_classifier
from training.dpo import DPOConfig, DPOOptions, train_dpo
from training.kto import KTOConfig, KTOOptions, train_kto
from training.loop import LoopConfig, LoraOptions
from training.mlm import MLMConfig, MLMOptions, train_mlm
from training.reward import RewardConfig, train_reward
from training.sft import SFTConfig, SFTOptions, train_sft

# task -> (its config, its training function); the task's module declares both
TASKS: dict[str, tuple[type, Any]] = {
    "sft": (SFTConfig, train_sft),
    "classify": (ClassifyConfig, train_classifier),
    "dpo": (DPOConfig, train_dpo),
    "reward": (RewardConfig, train_reward),
    "mlm": (MLMConfig, train_mlm),
    "kto": (KTOConfig, train_kto),
}


def _task_default(name: str, help: str) -> str:
    return f"{help} [default: {', '.join(f'{getattr(c, name):g} {t}' for t, (c, _) in TASKS.items())}]."


@dataclass(frozen=True)
class TrainOptions(KTOOptions, MLMOptions, DPOOptions, SFTOptions, ClassifyOptions, LoraOptions, LoopConfig):
    """The options of every task, each declared once with its task's config (training.loop, .sft,
    .classify, .dpo, .reward, .mlm, .kto). Here None means the task's default; for task and model,
    what the shards' lineage says."""

    task: Literal["sft", "classify", "dpo", "reward", "mlm", "kto"] | None = opt(None, "[default: what the shards' record kind trains (their lineage)]")
    model: str | None = opt(None, "Base model: minilm, smollm2-135m, a local dir or a Hub id [default: the model "
                            "whose tokenizer made the shards (their lineage)].")
    lr: float | None = opt(None, _task_default("lr", "Learning rate"), min=0, min_open=True)
    warmup_ratio: float | None = opt(None, _task_default("warmup_ratio", "Share of the steps spent warming up"),
                                     min=0, max=1)
    weight_decay: float | None = opt(None, _task_default("weight_decay", "AdamW weight decay"), min=0)
    val_size: float | None = opt(None, _task_default("val_size", "Eval split from the shards: a fraction or a row count"),
                                 min=0)


def train(shards: str, out: str, *, force: bool = False, **options: Any) -> Manifest:
    """Train on tokenize shards; `options` are the fields of TrainOptions. Returns the manifest (the
    metrics are in OUT/metrics.json)."""
    from training.data import resolve_task_model

    o = parse_options(TrainOptions, options, "train")
    task, model = resolve_task_model(shards, o.task, o.model)
    config, run = TASKS[task]
    return run(shards, out, task_config(config, o, model), force=force)


train.config_class = TrainOptions  # the options' one declaration: CLI, recipes, Python (dataprep.options)


def task_config(config: type[LoopConfig], options: TrainOptions, model: str) -> Any:
    """The task's config from the options it has; None keeps the task's default."""
    given = {f.name: getattr(options, f.name) for f in dataclasses.fields(config) if hasattr(options, f.name)}
    return config(**{**{k: v for k, v in given.items() if v is not None}, "model": model})
