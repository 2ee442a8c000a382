"""The shipped recipes: each validates, each runs end to end on the CPU on a small slice, and a
rerun of a finished recipe does no work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataprep.cli import cli
from dataprep.pipeline import run_recipe
from dataprep.recipe import load_recipe
from tests.conftest import REPO

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
# a slice small enough for 2 CPU cores: few rows, a couple of optimizer steps, no 4-bit
# (bitsandbytes' CPU 4-bit kernels take minutes per step at this size; tests/training/test_sft.py
# covers 4-bit QLoRA on the CPU with a tiny model)
SLICE = ["convert.limit=24", "train.max_steps=2", "train.micro_batch=2", "train.grad_accum=1", "train.report_to=none",
         "train.quant=none", "tokenize.max_len=256"]


def test_every_recipe_validates_and_documents_how_to_run_it(runner):
    assert len(RECIPES) >= 6
    result = runner.invoke(cli, ["validate", *map(str, RECIPES)])
    assert result.exit_code == 0, result.output
    for path in RECIPES:
        header = path.read_text().split("\nname:")[0]
        assert "# " in header and ("make " in header or "dataprep run" in header), path.name


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_runs_end_to_end_on_a_slice(path, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    recipe = load_recipe(path, SLICE)
    results = run_recipe(recipe, workdir=str(tmp_path))
    assert [r.stage for r in results] == [s.stage for s in recipe.stages]
    counts = [r.manifest.counts.to_json() for r in results]
    assert counts[0]["in"] == 24
    for before, after in zip(counts, counts[1:-1], strict=False):  # each stage reads what the previous kept
        assert after["in"] == before["out"]
    for c in counts[:-1]:
        assert c["in"] == c["out"] + c["rejected"]
    train_dir = tmp_path / "train"
    metrics = json.loads((train_dir / "metrics.json").read_text())
    assert metrics["steps"] == 2 and (train_dir / "loss.png").is_file()


@pytest.mark.slow
def test_rerun_of_a_finished_recipe_does_no_work(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    recipe = load_recipe(REPO / "recipes" / "demo.yaml", SLICE)
    run_recipe(recipe, workdir=str(tmp_path))
    stamps = {p: p.stat().st_mtime_ns for p in Path(tmp_path).rglob("*") if p.is_file()}
    again = run_recipe(recipe, workdir=str(tmp_path))
    assert all(r.skipped for r in again)
    assert stamps == {p: p.stat().st_mtime_ns for p in Path(tmp_path).rglob("*") if p.is_file()}
    changed = run_recipe(load_recipe(REPO / "recipes" / "demo.yaml", [*SLICE, "train.lr=0.001"]), workdir=str(tmp_path))
    assert [r.skipped for r in changed] == [True, True, True, False]


def test_typo_in_a_shipped_recipe_names_key_and_line(tmp_path, runner):
    text = (REPO / "recipes" / "demo.yaml").read_text().replace("  max_len: 256", "  max_lenght: 256")
    path = tmp_path / "typo.yaml"
    path.write_text(text)
    line = text.splitlines().index("  max_lenght: 256") + 1
    result = runner.invoke(cli, ["run", str(path)])
    assert result.exit_code != 0
    assert f"{path}:{line}: tokenize.max_lenght: unknown option" in result.output
