"""Merge a LoRA adapter into its base model and save a standalone model.

The base is loaded in bf16 (never 4-bit): merging into a quantised base rounds the LoRA delta
away (peft #2321). Re-quantise the merged model afterwards if needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dataprep import io
from dataprep.errors import DataprepError
from training.outputs import load_adapter_model


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
