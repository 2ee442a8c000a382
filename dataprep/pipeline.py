"""Run a recipe: each stage reads the previous stage's output directory and writes its own.

Stages skip themselves when their manifest fingerprint says the output is current, so a
rerun after changing only the training options does not re-convert or re-tokenize.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from dataprep.errors import DataprepError
from dataprep.io import MANIFEST
from dataprep.recipe import STAGES, Recipe, stage_function
from dataprep.stage import Manifest, read_manifest


@dataclasses.dataclass
class StageResult:
    stage: str
    out: str
    skipped: bool
    seconds: float
    manifest: Manifest | None


def select_stages(recipe: Recipe, start: str | None, until: str | None) -> list[str]:
    names = [s.stage for s in recipe.stages]
    for flag, value in (("--from", start), ("--until", until)):
        if value is not None and value not in names:
            raise DataprepError(f"{flag} {value}: the recipe's stages are {', '.join(names)}")
    first = names.index(start) if start else 0
    last = names.index(until) if until else len(names) - 1
    return names[first : last + 1]


def stage_input(recipe: Recipe, stage: str, workdir: Path) -> str | list[str]:
    """The stage's explicit `input` (where an item names an earlier stage of the recipe, that stage's
    output: `mix: {input: [filter, other/records]}`), else the output of the recipe's previous stage."""
    config = recipe.stage(stage)
    earlier = [s.stage for s in recipe.stages if STAGES.index(s.stage) < STAGES.index(stage)]
    if config.input is not None:
        items = [config.input] if isinstance(config.input, str) else list(config.input)
        resolved = [stage_output(stage, name, workdir) if name in earlier else name for name in items]
        return resolved[0] if isinstance(config.input, str) else resolved
    return stage_output(stage, earlier[-1], workdir)  # the first stage has an input: load_recipe checks it


def stage_output(stage: str, earlier: str, workdir: Path) -> str:
    """Where `stage` reads the output of the earlier stage `earlier` (split: its train part)."""
    previous = workdir / earlier
    if not (previous / MANIFEST).is_file():
        raise DataprepError(f"{stage} needs the output of {earlier} in {previous}; run without --from first")
    part = getattr(stage_function(earlier), "chained_output", None)
    return str(previous / part) if part else str(previous)


def check_launcher(names: list[str]) -> None:
    """Under a distributed launcher only the train stage may run: every process would otherwise run
    the same data stages into the same output (one of them would win the lock, the others fail)."""
    from training.dist import launched

    data = [n for n in names if n != "train"]
    if launched() and data:
        raise DataprepError(
            f"dataprep run under a launcher (WORLD_SIZE={os.environ.get('WORLD_SIZE')}) would run {', '.join(data)} once "
            f"per process; run the data stages once with `dataprep run RECIPE --until {data[-1]}`, then "
            "`accelerate launch -m dataprep run RECIPE --from train` (or `dataprep train ... --gpus N`)")


def run_recipe(recipe: Recipe, *, start: str | None = None, until: str | None = None, force: bool = False,
               workdir: str | None = None, on_stage=None) -> list[StageResult]:
    """Run the selected stages in order; `on_stage(index, total, name)` is called before each."""
    root = Path(workdir or recipe.workdir)
    names = select_stages(recipe, start, until)
    check_launcher(names)
    results = []
    for i, name in enumerate(names):
        if on_stage:
            on_stage(i, len(names), name)
        out = root / name
        began = time.perf_counter()
        # every stage function returns its manifest, with `skipped` set when its output was already current
        result = stage_function(name)(stage_input(recipe, name, root), str(out), force=force, **recipe.stage(name).options)
        results.append(StageResult(name, str(out), result.skipped, time.perf_counter() - began, read_manifest(out)))
    return results


def summary_table(results: list[StageResult]) -> str:
    """One line per stage: rows in/out/rejected, tokens, training metrics, time."""
    rows = [("stage", "in", "out", "dropped", "notes", "time")]
    for r in results:
        counts = r.manifest.counts if r.manifest else None
        rows.append((
            r.stage,
            str(counts.n_in) if counts else "",
            str(counts.n_out) if counts else "",
            str(counts.rejected) if counts else "",
            _notes(r),
            "cached" if r.skipped else f"{r.seconds:.1f}s",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _notes(result: StageResult) -> str:
    manifest = result.manifest
    notes = []
    stats = (manifest.get("token_stats") if manifest else None) or {}
    if "total" in stats:
        notes.append(f"tokens {stats['total']}" + (f" (trainable {stats['trainable']})" if "trainable" in stats else ""))
    metrics_file = Path(result.out) / "metrics.json"
    if metrics_file.is_file():
        notes.append(_training_notes(json.loads(metrics_file.read_text())))
    return ", ".join(n for n in notes if n)


def _training_notes(metrics: dict[str, Any]) -> str:
    """Eval loss before → after, or the classification metrics of the test (else validation) split."""
    notes = []
    evals = [e["loss"] for e in metrics.get("eval_loss") or [] if isinstance(e, dict) and "loss" in e]
    if len(evals) >= 2:
        notes.append(f"eval loss {evals[0]:.3f} → {evals[-1]:.3f}")
    split = metrics.get("test") or metrics.get("val")
    if isinstance(split, dict):
        for key in ("f1_micro", "f1_macro", "roc_auc_micro", "jaccard_samples", "subset_accuracy"):
            if isinstance(split.get(key), (int, float)):
                notes.append(f"{key} {split[key]:.3f}")
    if "steps" in metrics:
        notes.append(f"{metrics['steps']} steps")
    return ", ".join(notes)
