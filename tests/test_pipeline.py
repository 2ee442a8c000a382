"""The recipe runner: stage order, inputs chained through output dirs, cache hits, --from/--until."""

from __future__ import annotations

import sys
import types

import pytest

from dataprep import recipe as recipe_mod
from dataprep.errors import DataprepError
from dataprep.pipeline import run_recipe, summary_table
from dataprep.recipe import load_recipe
from dataprep.stage import Outcome, read_manifest, run_stage

CALLS: list[tuple[str, str]] = []


def _stage(name):
    def run(path: str | list[str], out: str, *, scale: int = 1, force: bool = False):
        def build(ws):
            CALLS.append((name, str(path)))
            n_in = 10 if name == "convert" else read_manifest(path).counts.n_out
            return Outcome(n_in, n_in - scale, removed={"scaled": scale})

        return run_stage(name, out, inputs=[], config={"path": str(path), "scale": scale}, build=build, force=force)

    return run


@pytest.fixture(autouse=True)
def fake_stages(monkeypatch):
    module = types.ModuleType("fake_pipeline_stages")
    for name in ("convert", "dedupe", "tokenize"):
        setattr(module, name, _stage(name))
    monkeypatch.setitem(sys.modules, "fake_pipeline_stages", module)
    monkeypatch.setattr(recipe_mod, "STAGE_FUNCTIONS", {s: f"fake_pipeline_stages:{s}" for s in ("convert", "dedupe", "tokenize")})
    CALLS.clear()


def recipe(tmp_path, extra=()):
    path = tmp_path / "r.yaml"
    path.write_text(f"name: t\nworkdir: {tmp_path / 'w'}\nconvert:\n  input: raw.csv\ndedupe: {{}}\ntokenize:\n  scale: 2\n")
    return load_recipe(path, list(extra))


def test_stages_chain_and_count(tmp_path):
    results = run_recipe(recipe(tmp_path))
    w = tmp_path / "w"
    assert CALLS == [("convert", "raw.csv"), ("dedupe", str(w / "convert")), ("tokenize", str(w / "dedupe"))]
    assert [r.manifest.counts.n_out for r in results] == [9, 8, 6]
    table = summary_table(results)
    assert table.splitlines()[0].split() == ["stage", "in", "out", "dropped", "notes", "time"]
    assert table.splitlines()[3].split()[:4] == ["tokenize", "8", "6", "2"]


def test_rerun_does_no_work_and_option_change_reruns_only_that_stage(tmp_path):
    run_recipe(recipe(tmp_path))
    CALLS.clear()
    results = run_recipe(recipe(tmp_path))
    assert CALLS == [] and all(r.skipped for r in results)
    assert "cached" in summary_table(results)
    results = run_recipe(recipe(tmp_path, ["tokenize.scale=3"]))
    assert [c[0] for c in CALLS] == ["tokenize"]
    assert [r.skipped for r in results] == [True, True, False]


def test_from_and_until(tmp_path):
    with pytest.raises(DataprepError, match="run without --from first"):
        run_recipe(recipe(tmp_path), start="tokenize")
    run_recipe(recipe(tmp_path), until="dedupe")
    assert [c[0] for c in CALLS] == ["convert", "dedupe"]
    CALLS.clear()
    run_recipe(recipe(tmp_path), start="tokenize")
    assert [c[0] for c in CALLS] == ["tokenize"]
    with pytest.raises(DataprepError, match="the recipe's stages are"):
        run_recipe(recipe(tmp_path), until="train")


def test_under_a_launcher_only_the_train_stage_runs(tmp_path, monkeypatch):
    from dataprep.pipeline import check_launcher

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(DataprepError, match=r"would run convert, dedupe, tokenize once per process.*--until tokenize.*--from train"):
        run_recipe(recipe(tmp_path))
    assert CALLS == []  # refused before any stage ran
    check_launcher(["train"])  # the train stage alone is what a launcher is for
    monkeypatch.setenv("WORLD_SIZE", "1")
    run_recipe(recipe(tmp_path))
    assert [c[0] for c in CALLS] == ["convert", "dedupe", "tokenize"]


def test_training_notes_show_eval_loss_and_classification_metrics():
    from dataprep.pipeline import _training_notes

    sft = {"eval_loss": [{"step": 0, "loss": 2.0}, {"step": 5, "loss": 0.5}], "steps": 5}
    assert _training_notes(sft) == "eval loss 2.000 → 0.500, 5 steps"
    # the keys training.classify writes: "val" always, "test" with test shards
    classify = {"val": {"f1_micro": 0.25}, "test": {"f1_micro": 0.5, "roc_auc_micro": 0.75}, "steps": 3}
    assert _training_notes(classify) == "f1_micro 0.500, roc_auc_micro 0.750, 3 steps"
    del classify["test"]
    assert _training_notes(classify) == "f1_micro 0.250, 3 steps"
