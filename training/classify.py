"""Multi-label text classification on `classify` shards: an encoder (default: the packaged MiniLM
BERT) with `problem_type="multi_label_classification"` (BCE-with-logits on float multi-hot labels).

Pooling: sentence-transformers encoders that declare mean pooling (the packaged MiniLM does)
classify from the masked mean of their hidden states (training.pooling); others from [CLS], as
transformers does. `--pooling` overrides.

The decision threshold (one global, or one per label) is tuned on the validation split and saved
with the model in `thresholds.json`; test metrics use the tuned threshold. Load a trained
classifier back with `training.outputs.load_trained_classifier`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from dataprep import io
from dataprep.errors import DataprepError
from dataprep.models import save_tokenizer
from dataprep.options import opt
from dataprep.stage import Manifest, Outcome, Workspace, run_stage
from training import data, dist, metrics
from training.loop import Logger, LoopConfig, LoraOptions, device, peak_memory_gb, plot_losses, to_device, train_loop


@dataclass(frozen=True)
class ClassifyOptions:
    """The options only classification has (dataprep.options; `dataprep train` takes them through TrainOptions)."""

    test_shards: str | None = opt(None, "classify: test split.", path="existing-dir")
    per_label_threshold: bool = opt(False, "classify: tune one threshold per label.")
    # N >= 0: train only the top N encoder layers (and the head); -1: train all
    freeze_layers: int = opt(-1, "classify: train only the top N encoder layers (-1: all).", min=-1)
    lora: bool = opt(False, "classify: LoRA instead of full fine-tuning.")
    pooling: Literal["auto", "cls", "mean"] = opt(
        "auto", "classify: sentence vector for the head; auto = mean for sentence-transformers encoders that "
        "mean-pool (minilm), else [CLS].")


@dataclass(frozen=True)
class ClassifyConfig(ClassifyOptions, LoraOptions, LoopConfig):
    model: str = "minilm"
    lr: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    val_size: float = 0.1


def resolve_pooling(pooling: str, model_path: str) -> str:
    if pooling not in ("auto", "cls", "mean"):
        raise DataprepError(f"--pooling {pooling!r} is not one of auto, cls, mean")
    if pooling != "auto":
        return pooling
    from training.pooling import sentence_pooling

    return "mean" if sentence_pooling(model_path) == "mean" else "cls"


def load_classifier(path: str, label_names: list[str]):
    """The encoder with a fresh multi-label head, in fp32 whatever dtype the checkpoint was saved
    in (transformers 5 loads a checkpoint's own dtype; pure fp16 training loses small updates)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        dtype=torch.float32,
        num_labels=len(label_names),
        problem_type="multi_label_classification",
        id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)},
    )
    return model.to(device())


def load_mean_classifier(path: str, label_names: list[str]):
    """The encoder, in fp32, under a fresh mean-pooling multi-label head (training.pooling)."""
    import torch
    from transformers import AutoModel

    from training.pooling import MeanPoolingClassifier

    encoder = AutoModel.from_pretrained(path, dtype=torch.float32)
    encoder.config.update({"id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)},
                           "problem_type": "multi_label_classification"})
    return MeanPoolingClassifier(encoder, len(label_names)).to(device())


def encoder_layers(model) -> list:
    """The encoder's transformer blocks (BERT-family `encoder.layer`, or `layers`)."""
    base = model.base_model
    for attr in ("encoder.layer", "layers", "transformer.layer", "encoder.layers"):
        obj = base
        for part in attr.split("."):
            obj = getattr(obj, part, None)
        if obj is not None:
            return list(obj)
    raise DataprepError(f"--freeze-layers: cannot find the encoder layers of {type(model).__name__}; drop the option")


def freeze_below_top(model, top_n: int) -> None:
    """Freeze the embeddings and every encoder layer except the top `top_n`; the head stays trainable."""
    layers = encoder_layers(model)
    if top_n > len(layers):
        raise DataprepError(f"--freeze-layers {top_n} exceeds the model's {len(layers)} layers; pass at most {len(layers)}")
    for p in model.base_model.parameters():
        p.requires_grad = False
    for layer in layers[len(layers) - top_n :]:
        for p in layer.parameters():
            p.requires_grad = True
    pooler = getattr(model.base_model, "pooler", None)
    for p in pooler.parameters() if pooler is not None and getattr(model, "pooling", "cls") == "cls" else []:
        p.requires_grad = True


def classify_loss_sum(model, batch: dict[str, Any]):
    """(BCE summed over rows, rows): the model's mean BCE times the row count, so accumulation
    normalises per row."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    n = batch["labels"].shape[0]
    return out.loss * n, n


def predict_scores(model, batches: list) -> tuple[np.ndarray, np.ndarray, float]:
    """(labels, sigmoid scores, mean BCE per row) over the batches."""
    import torch

    model.eval()
    ys, ps, loss = [], [], 0.0
    with torch.no_grad():
        for batch in batches:
            batch = to_device(batch)
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
            loss += float(out.loss) * batch["labels"].shape[0]
            ys.append(batch["labels"].cpu().numpy())
            ps.append(torch.sigmoid(out.logits.float()).cpu().numpy())
    y = np.concatenate(ys)
    return y, np.concatenate(ps), loss / max(len(y), 1)


def classify_batches(dataset, pad: int, micro_batch: int, num_labels: int, shard: bool = False):
    """seed -> list of padded micro-batches with one multi-hot label vector per row (`shard`: this
    rank's share of them)."""
    return data.batcher(dataset, micro_batch, lambda rows: data.collate_padded(rows, pad, num_labels=num_labels),
                        shard=shard)


def _prepare(shards: str, cfg: ClassifyConfig):
    from dataprep.models import load_tokenizer, resolve_model

    dataset, manifest = data.load_shards(shards)
    data.check_task(manifest, "classify", shards)
    label_names = list(manifest.lineage.label_names or [])
    if not label_names:
        raise DataprepError(f"manifest of {shards} has no label_names; re-run `dataprep tokenize` on classify records")
    model_path = resolve_model(cfg.model)
    tokenizer = load_tokenizer(model_path)
    data.check_tokenizer(manifest, tokenizer, cfg.model)
    splits = {}
    for name, path in (("eval", cfg.eval_shards), ("test", cfg.test_shards)):
        if path:
            ds, m = data.load_shards(path)
            data.check_task(m, "classify", path)
            if list(m.lineage.label_names or []) != label_names:
                raise DataprepError(f"label names of {path} differ from those of {shards}; tokenize all splits together")
            splits[name] = ds
    if "eval" not in splits:
        dataset, splits["eval"] = data.split_eval(dataset, cfg.val_size, cfg.seed)
    if splits["eval"] is None:
        raise DataprepError("classification needs a validation split to tune the threshold; pass --eval-shards or --val-size")
    return dataset, splits, manifest, label_names, tokenizer, model_path


def setup_model(model_path: str, label_names: list[str], cfg: ClassifyConfig):
    mean = resolve_pooling(cfg.pooling, model_path) == "mean"
    model = (load_mean_classifier if mean else load_classifier)(model_path, label_names)
    if cfg.freeze_layers >= 0:
        freeze_below_top(model, cfg.freeze_layers)
    if cfg.lora:
        from training.sft import add_lora

        if mean:  # LoRA on the encoder (not its unused pooler); the head outside it trains in full
            pooler = [n for n, m in model.encoder.named_modules() if n.split(".")[0] == "pooler" and hasattr(m, "weight")]
            model.encoder = add_lora(model.encoder, cfg, task_type="FEATURE_EXTRACTION", exclude_modules=pooler or None)
        else:
            model = add_lora(model, cfg, task_type="SEQ_CLS")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return model, trainable, total


def train_classifier(shards: str, out: str, config: ClassifyConfig, force: bool = False) -> Manifest:
    """Train a multi-label classifier on `shards`; tune the threshold on validation; write the
    model, tokenizer, thresholds.json, metrics.json and loss.png to `out`. Returns the manifest."""
    dist.setup()
    train_set, splits, manifest, label_names, tokenizer, model_path = _prepare(shards, config)

    def build(ws: Workspace) -> Outcome:
        import torch

        torch.manual_seed(config.seed)  # the new head (and LoRA): the same on every rank, and run after run
        model, trainable, total = setup_model(model_path, label_names, config)
        pad = (manifest.lineage.tokenizer.pad_token_id if manifest.lineage.tokenizer else None) or 0
        n = len(label_names)
        make_train = classify_batches(train_set, pad, config.micro_batch, n, shard=True)
        # every rank evaluates all rows (the threshold is tuned on them); rank 0 writes
        split_batches = {k: classify_batches(v, pad, config.micro_batch * 2, n)(config.seed) for k, v in splits.items()}

        def evaluate() -> dict[str, float]:
            y, p, loss = predict_scores(model, split_batches["eval"])
            return {"loss": loss, "f1_micro@0.5": metrics.multilabel_metrics(y, p, 0.5)["f1_micro"]}

        logger = Logger(config.report_to if dist.is_main() else "none", ws.out / "runs", dataclasses.asdict(config))
        with ws.timer("train"):
            hist = train_loop(model, make_train, classify_loss_sum, evaluate, config, logger)
        seconds = dist.reduce([hist.seconds], "max")[0]  # the slowest rank's
        logger.close()
        with ws.timer("evaluate"):
            result = _final_metrics(model, split_batches, label_names, config.per_label_threshold)
        result.update({
            "train_loss": hist.train,
            "eval_curve": hist.eval,
            "steps": len(hist.train),
            "train_seconds": round(seconds, 3),
            "rows_per_s": round(hist.trained_tokens / max(seconds, 1e-9), 1),  # a row is one target
            "pooling": getattr(model, "pooling", "cls"),
            "trainable_params": int(trainable),
            "total_params": int(total),
            "device": device(),
            "processes": dist.world(),
            **dist.max_across(peak_memory_gb()),
        })
        if not dist.is_main():
            return Outcome(0, 0)
        _save(model, tokenizer, ws.out, label_names, result, config)
        plot_losses(hist, ws.out / "loss.png", f"multi-label {config.model}")
        n = len(train_set) + (len(splits["eval"]) if not config.eval_shards else 0)
        details = dict(base_model_path=model_path,
                       metrics={k: v for k, v in result.items() if k not in ("train_loss", "eval_curve")})
        return Outcome(n, n, details, lineage={"task": "classify", "base_model": config.model})

    return dist.run_stage_on_main(
        run_stage, build, stage="train", out=out, inputs=[p for p in (shards, config.eval_shards, config.test_shards) if p],
        config={**dataclasses.asdict(config), "processes": dist.world()},  # they decide the global batch
        data_files=("thresholds.json", "metrics.json"), force=force, upstream=manifest)


def _final_metrics(model, split_batches: dict, label_names: list[str], per_label: bool) -> dict[str, Any]:
    """Tune the threshold on validation; metrics on validation (at 0.5 and tuned) and on test."""
    y, p, _ = predict_scores(model, split_batches["eval"])
    threshold = metrics.tune_threshold(y, p, per_label=per_label)
    result: dict[str, Any] = {
        "threshold": threshold.tolist() if isinstance(threshold, np.ndarray) else threshold,
        "val@0.5": metrics.multilabel_metrics(y, p, 0.5, label_names),
        "val": metrics.multilabel_metrics(y, p, threshold, label_names),
    }
    if "test" in split_batches:
        yt, pt, _ = predict_scores(model, split_batches["test"])
        result["test@0.5"] = metrics.multilabel_metrics(yt, pt, 0.5, label_names)
        result["test"] = metrics.multilabel_metrics(yt, pt, threshold, label_names)
    return result


def _save(model, tokenizer, out, label_names: list[str], result: dict[str, Any], config: ClassifyConfig) -> None:
    model.save_pretrained(out)
    save_tokenizer(tokenizer, out)
    io.write_json(out / "thresholds.json", {
        "label_names": label_names,
        "pooling": getattr(model, "pooling", "cls"),
        "per_label": config.per_label_threshold,
        "threshold": result["threshold"],
    })
    io.write_json(out / "metrics.json", result)
