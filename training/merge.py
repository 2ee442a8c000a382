"""Merge a LoRA adapter into its base model and save a standalone model.

The base is loaded in bf16 (never 4-bit): merging into a quantised base rounds the LoRA delta
away (peft #2321). Re-quantise the merged model afterwards if needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dataprep.models import save_tokenizer
from dataprep.options import opt, parse_options
from dataprep.stage import Manifest, Outcome, Workspace, read_manifest, run_stage
from training.outputs import load_adapter_model


@dataclass(frozen=True)
class MergeOptions:
    """The merge stage's options (dataprep.options)."""

    dtype: Literal["bfloat16", "float16", "float32"] = opt(
        "bfloat16", "Precision of the base and the saved model (never 4-bit: merging into 4-bit rounds the adapter away).")


def merge_adapter(adapter: str | Path, out: str | Path, *, force: bool = False, **options: Any) -> Manifest:
    """Merge `adapter` into its base and save model + tokenizer (+ thresholds) to `out`; `options` are
    the fields of MergeOptions."""
    dtype = parse_options(MergeOptions, options, "merge").dtype

    def build(ws: Workspace) -> Outcome:
        model, tokenizer, trained = load_adapter_model(adapter, dtype)
        merged = model.merge_and_unload()
        with ws.timer("save"):
            merged.save_pretrained(ws.out)
            save_tokenizer(tokenizer, ws.out)
        thresholds = Path(adapter) / "thresholds.json"
        if thresholds.is_file():
            (ws.out / "thresholds.json").write_text(thresholds.read_text())
        n_params = sum(p.numel() for p in merged.parameters())
        return Outcome(1, 1, {"params": n_params})

    return run_stage("merge", out, inputs=[str(adapter)], config={"dtype": dtype}, build=build,
                     data_files=("config.json",), force=force, upstream=read_manifest(adapter))
