"""Merge a LoRA adapter into its base model and save a standalone model.

The base is loaded in bf16 (never 4-bit): merging into a quantised base rounds the LoRA delta
away (peft #2321). Re-quantise the merged model afterwards if needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dataprep import io
from dataprep.errors import DataprepError


def adapter_base(adapter: str | Path) -> tuple[str, dict[str, Any]]:
    """(local path of the base model, the train manifest or {}) for an adapter directory."""
    adapter = Path(adapter)
    config_path = adapter / "adapter_config.json"
    if not config_path.is_file():
        raise DataprepError(f"{adapter} has no adapter_config.json; pass the output directory of `dataprep train`")
    manifest = io.read_manifest(adapter) or {}
    base = manifest.get("base_model_path") or json.loads(config_path.read_text()).get("base_model_name_or_path")
    if base and not Path(base).exists() and manifest.get("base_model"):
        from dataprep.models import resolve_model

        base = resolve_model(manifest["base_model"])  # the cache moved: resolve the name again
    if not base:
        raise DataprepError(f"{config_path} names no base model; re-create the adapter with `dataprep train`")
    return base, manifest


def load_adapter_model(adapter: str | Path, dtype: str = "bfloat16"):
    """(peft model on a full-precision base, tokenizer, train manifest)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, manifest = adapter_base(adapter)
    if manifest.get("task") == "classify":
        from training.classify import load_trained_classifier

        model = load_trained_classifier(str(adapter), dtype)[0]
    else:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype))
        model = PeftModel.from_pretrained(model, str(adapter))
    return model, AutoTokenizer.from_pretrained(str(adapter)), manifest


def merge_adapter(adapter: str | Path, out: str | Path, dtype: str = "bfloat16") -> dict[str, Any]:
    """Merge `adapter` into its bf16 base and save model + tokenizer (+ thresholds) to `out`."""
    if dtype not in ("bfloat16", "float16", "float32"):
        raise DataprepError(f"--dtype {dtype!r} is not one of bfloat16, float16, float32")
    model, tokenizer, manifest = load_adapter_model(adapter, dtype)
    merged = model.merge_and_unload()
    inputs = io.describe_inputs([str(adapter)])
    fp = io.stage_fingerprint("merge", inputs, {"dtype": dtype})
    timer = io.Timer()
    with io.atomic_dir(out) as tmp:
        with timer("save"):
            merged.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        thresholds = Path(adapter) / "thresholds.json"
        if thresholds.is_file():
            (tmp / "thresholds.json").write_text(thresholds.read_text())
        n_params = sum(p.numel() for p in merged.parameters())
        io.write_json(tmp / io.MANIFEST, io.make_manifest(
            "merge", fp, inputs, {"dtype": dtype}, 1, 1, {}, timer.seconds,
            task=manifest.get("task", "sft"), base_model=manifest.get("base_model"), template=manifest.get("template"),
            label_names=manifest.get("label_names"), params=n_params,
        ))
    return {"out": str(out), "params": n_params, "dtype": dtype}
