"""Merge a LoRA adapter into its base model and save a standalone model.

The base is loaded in bf16 (never 4-bit): merging into a quantised base rounds the LoRA delta
away (peft #2321). Re-quantise the merged model afterwards if needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dataprep.errors import DataprepError
from dataprep.stage import Manifest, Outcome, Workspace, read_manifest, run_stage


def adapter_base(adapter: str | Path) -> tuple[str, dict[str, Any]]:
    """(local path of the base model, the train manifest or {}) for an adapter directory."""
    adapter = Path(adapter)
    config_path = adapter / "adapter_config.json"
    if not config_path.is_file():
        raise DataprepError(f"{adapter} has no adapter_config.json; pass the output directory of `dataprep train`")
    found = read_manifest(adapter)
    manifest = found.details if found else {}
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


def merge_adapter(adapter: str | Path, out: str | Path, dtype: str = "bfloat16", force: bool = False) -> Manifest:
    """Merge `adapter` into its bf16 base and save model + tokenizer (+ thresholds) to `out`."""
    if dtype not in ("bfloat16", "float16", "float32"):
        raise DataprepError(f"--dtype {dtype!r} is not one of bfloat16, float16, float32")

    def build(ws: Workspace) -> Outcome:
        model, tokenizer, manifest = load_adapter_model(adapter, dtype)
        merged = model.merge_and_unload()
        with ws.timer("save"):
            merged.save_pretrained(ws.out)
            tokenizer.save_pretrained(ws.out)
        thresholds = Path(adapter) / "thresholds.json"
        if thresholds.is_file():
            (ws.out / "thresholds.json").write_text(thresholds.read_text())
        n_params = sum(p.numel() for p in merged.parameters())
        return Outcome(1, 1, dict(task=manifest.get("task", "sft"), base_model=manifest.get("base_model"),
                                  template=manifest.get("template"), label_names=manifest.get("label_names"),
                                  params=n_params))

    return run_stage("merge", out, inputs=[str(adapter)], config={"dtype": dtype}, build=build,
                     data_files=("config.json",), force=force)

