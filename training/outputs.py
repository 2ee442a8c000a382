"""Load what training wrote: a LoRA adapter (causal LM or classifier), a trained classifier
(full or LoRA, [CLS] or mean pooling), or a merged model.

The one place that knows the layout of a `dataprep train` / `dataprep merge` output:
`adapter_config.json` marks an adapter (its base named in the train manifest or the adapter
config), `thresholds.json` marks a classifier (label names, pooling, tuned thresholds), and a
mean-pooling classifier keeps its head in `training.pooling.HEAD_FILE`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dataprep.errors import DataprepError
from dataprep.models import save_tokenizer
from dataprep.stage import Manifest, read_manifest
from training.loop import device


def adapter_base(adapter: str | Path) -> tuple[str, Manifest]:
    """(local path of the base model, the train manifest) for an adapter directory."""
    adapter = Path(adapter)
    config_path = adapter / "adapter_config.json"
    if not config_path.is_file():
        raise DataprepError(f"{adapter} has no adapter_config.json; pass the output directory of `dataprep train`")
    manifest = read_manifest(adapter) or Manifest.from_json({})
    base = manifest.get("base_model_path") or json.loads(config_path.read_text()).get("base_model_name_or_path")
    if base and not Path(base).exists() and manifest.lineage.base_model:
        from dataprep.models import resolve_model

        base = resolve_model(manifest.lineage.base_model)  # the cache moved: resolve the name again
    if not base:
        raise DataprepError(f"{config_path} names no base model; re-create the adapter with `dataprep train`")
    return base, manifest


def is_classifier(path: str | Path) -> bool:
    """True for the output of `dataprep train --task classify` (or of merging it)."""
    return (Path(path) / "thresholds.json").is_file()


def load_trained_classifier(path: str, dtype: str = "float32"):
    """(model in eval mode, thresholds.json) for the output of `train_classifier` or of merging it:
    full model or LoRA adapter, [CLS] or mean pooling."""
    thresholds_path = Path(path) / "thresholds.json"
    if not thresholds_path.is_file():
        raise DataprepError(f"{path} has no thresholds.json; pass the output directory of `dataprep train --task classify`")
    saved = json.loads(thresholds_path.read_text())
    names = saved["label_names"]
    model = load_scorer(path, saved.get("pooling") == "mean", dtype, num_labels=len(names),
                        problem_type="multi_label_classification", id2label=dict(enumerate(names)),
                        label2id={n: i for i, n in enumerate(names)})
    return model, saved


def load_scorer(path: str | Path, mean: bool, dtype: str = "float32", **head):
    """A sequence classifier (or reward model) that `dataprep train` wrote to `path`, in eval mode:
    full model or LoRA adapter over its base, [CLS] (transformers' head) or mean pooling
    (training.pooling). `head`: the head's config (num_labels, ...)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModel, AutoModelForSequenceClassification

    from training.pooling import MeanPoolingClassifier

    torch_dtype = getattr(torch, dtype)
    adapter = (Path(path) / "adapter_config.json").is_file()
    weights = adapter_base(path)[0] if adapter else path
    if mean:
        model = AutoModel.from_pretrained(weights, dtype=torch_dtype)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(weights, dtype=torch_dtype, **head)
    if adapter:
        model = PeftModel.from_pretrained(model, str(path))
    if mean:
        model = MeanPoolingClassifier(model, head["num_labels"])
        model.load_head(path)
    return model.to(torch_dtype).eval()


def load_adapter_model(adapter: str | Path, dtype: str = "bfloat16"):
    """(peft model on a full-precision base, tokenizer, train manifest)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, manifest = adapter_base(adapter)
    if manifest.lineage.task == "classify":
        model = load_trained_classifier(str(adapter), dtype)[0]
    else:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype))
        model = PeftModel.from_pretrained(model, str(adapter))
    return model, AutoTokenizer.from_pretrained(str(adapter)), manifest


def load_for_generation(path: str | Path):
    """(model on the device in eval mode, tokenizer, manifest, is_adapter) from an adapter dir, a
    merged model dir or a model name."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dataprep.models import resolve_model

    dtype = "bfloat16" if device() == "cuda" else "float32"
    if (Path(path) / "adapter_config.json").is_file():
        model, tok, manifest = load_adapter_model(path, dtype)
        return model.to(device()).eval(), tok, manifest, True
    local = resolve_model(str(path))
    model = AutoModelForCausalLM.from_pretrained(local, dtype=getattr(torch, dtype)).to(device()).eval()
    return model, AutoTokenizer.from_pretrained(local), read_manifest(local) or Manifest.from_json({}), False


def read_metrics(out: str | Path) -> dict[str, Any]:
    """The metrics.json a training run wrote (loss curves, throughput, classification metrics)."""
    path = Path(out) / "metrics.json"
    if not path.is_file():
        raise DataprepError(f"{out} has no metrics.json; pass the output directory of `dataprep train`")
    return json.loads(path.read_text())


def finish_run(ws, model, tokenizer, metrics: dict[str, Any], *, task: str, config, model_path: str, train_set,
               eval_set, files: dict[str, Any] | None = None):
    """Write the model (or adapter), tokenizer, metrics.json and `files` (name -> JSON) to a train
    run's output; return its Outcome: every row trained on or split off for eval, the metrics
    without their curves, the task and base model for the lineage."""
    from dataprep import io
    from dataprep.stage import Outcome

    model.save_pretrained(ws.out)
    save_tokenizer(tokenizer, ws.out)
    for name, obj in {**(files or {}), "metrics.json": metrics}.items():
        io.write_json(ws.out / name, obj)
    n = len(train_set) + (len(eval_set) if eval_set is not None and not config.eval_shards else 0)
    summary = {k: v for k, v in metrics.items() if not isinstance(v, list)}
    return Outcome(n, n, dict(base_model_path=model_path, metrics=summary), lineage={"task": task, "base_model": config.model})
