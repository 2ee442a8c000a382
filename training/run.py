"""`train(shards, out, **options)`: the one entry point behind `dataprep train` and recipes'
`train:` section. Its keyword options are the CLI's options (recipes validate against this
signature), and it dispatches to SFT or classification."""

from __future__ import annotations

from typing import Any, Literal

from dataprep.stage import Manifest


def train(
    shards: str,
    out: str,
    *,
    task: Literal["sft", "classify"] | None = None,
    model: str | None = None,
    quant: Literal["auto", "4bit", "none"] = "auto",
    lora_r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    target_modules: str = "all-linear",
    micro_batch: int = 8,
    grad_accum: int = 1,
    lr: float | None = None,
    scheduler: str = "cosine",
    warmup_ratio: float | None = None,
    epochs: float = 1.0,
    max_steps: int = -1,
    eval_shards: str | None = None,
    test_shards: str | None = None,
    val_size: float | None = None,
    eval_steps: int = 50,
    group_by_length: bool = False,
    gradient_checkpointing: bool = True,
    kbit_upcast: bool = False,
    compile: bool = False,
    bf16: Literal["auto", "yes", "no"] = "auto",
    attn: str = "auto",
    per_label_threshold: bool = False,
    freeze_layers: int = -1,
    lora: bool = False,
    pooling: Literal["auto", "cls", "mean"] = "auto",
    report_to: Literal["tensorboard", "wandb", "none"] = "tensorboard",
    seed: int = 42,
    force: bool = False,
) -> Manifest:
    """Train on tokenize shards; None options take the task's default (task and model: what the
    shards' lineage says). Returns the manifest (the metrics are in OUT/metrics.json)."""
    from training.data import resolve_task_model

    task, model = resolve_task_model(shards, task, model)
    common: dict[str, Any] = dict(
        micro_batch=micro_batch, grad_accum=grad_accum, scheduler=scheduler, epochs=epochs, max_steps=max_steps,
        eval_steps=eval_steps, seed=seed, report_to=report_to, eval_shards=eval_shards, lora_r=lora_r,
        lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=target_modules,
    )
    common.update({k: v for k, v in (("lr", lr), ("warmup_ratio", warmup_ratio), ("val_size", val_size)) if v is not None})
    if task == "sft":
        from training.sft import SFTConfig, train_sft

        cfg = SFTConfig(model=model, quant=quant, group_by_length=group_by_length,
                        gradient_checkpointing=gradient_checkpointing, kbit_upcast=kbit_upcast, compile=compile,
                        bf16=bf16, attn_implementation=attn, **common)
        return train_sft(shards, out, cfg, force=force)
    from training.classify import ClassifyConfig, train_classifier

    cfg = ClassifyConfig(model=model, test_shards=test_shards, per_label_threshold=per_label_threshold,
                         freeze_layers=freeze_layers, lora=lora, pooling=pooling, **common)
    return train_classifier(shards, out, cfg, force=force)
