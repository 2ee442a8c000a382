"""The mix stage: seeded counts per input, weights by largest remainder, lineage of several inputs,
bad options as one line with no output; and a recipe convert → mix → split on a slice of real data."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from dataprep.cli import cli
from dataprep.errors import DataprepError
from dataprep.mix import mix
from tests.split.test_split import write_jsonl


def sources(tmp_path: Path, sizes=(30, 10), kind_rows=None) -> list[str]:
    paths = []
    for k, n in enumerate(sizes):
        rows = kind_rows(k, n) if kind_rows else [{"text": f"source {k} row {i}"} for i in range(n)]
        paths.append(str(write_jsonl(tmp_path / f"s{k}.jsonl", rows)))
    return paths


def test_rows_per_input_seeded(tmp_path):
    a, b = sources(tmp_path)
    m = mix([a, b], tmp_path / "out", rows=(12, 5), seed=1)
    assert [(s["rows"], s["taken"]) for s in m.get("sources")] == [(30, 12), (10, 5)]
    assert (m.counts.n_in, m.counts.n_out) == (40, 17)
    assert m.counts.by_reason == {f"not sampled: {a}": 18, f"not sampled: {b}": 5}
    out = pl.read_parquet(tmp_path / "out" / "records.parquet")
    assert out.height == 17 and out["text"].str.starts_with("source 0").sum() == 12
    first = out["row"].to_list()
    assert first[:12] == sorted(first[:12]) and len(set(first[:12])) == 12  # input order, no repeats
    mix([a, b], tmp_path / "again", rows=(12, 5), seed=1)
    assert pl.read_parquet(tmp_path / "again" / "records.parquet")["row"].to_list() == first
    mix([a, b], tmp_path / "other", rows=(12, 5), seed=2)
    assert pl.read_parquet(tmp_path / "other" / "records.parquet")["row"].to_list() != first


def test_weights_and_total(tmp_path):
    a, b = sources(tmp_path)
    # 0.7/0.3 of 20 = 14/6; without --total the most without repeats: b's 10 rows are 0.3 of 33
    assert [s["taken"] for s in mix([a, b], tmp_path / "t", weights=(0.7, 0.3), total=20).get("sources")] == [14, 6]
    assert [s["taken"] for s in mix([a, b], tmp_path / "d", weights=(7, 3)).get("sources")] == [23, 10]
    # largest remainder: 1/3 each of 10 = 3.33 → 4, 3, 3
    (tmp_path / "three").mkdir()
    a2, b2, c2 = sources(tmp_path / "three", (10, 10, 10))
    assert [s["taken"] for s in mix([a2, b2, c2], tmp_path / "r", weights=(1, 1, 1), total=10).get("sources")] == [4, 3, 3]
    assert mix([a, b], tmp_path / "all").counts.n_out == 40  # neither: every row


def test_lineage_merges_labels(tmp_path):
    from dataprep.convert import convert

    dirs = []
    for k, labels in enumerate((["joy"], ["anger", "joy"])):
        path = tmp_path / f"c{k}.jsonl"
        path.write_text("".join(json.dumps({"text": f"t{k} {i}", "labels": labels}) + "\n" for i in range(4)))
        convert(str(path), str(tmp_path / f"conv{k}"), kind="classify")
        dirs.append(str(tmp_path / f"conv{k}"))
    m = mix(dirs, tmp_path / "out", rows=(2, 2))
    assert m.lineage.kind == "classify" and m.lineage.label_names == ["joy", "anger"]
    assert [u["stage"] for u in m.lineage.upstream] == ["convert", "convert"]


@pytest.mark.parametrize("args, message", [
    (["--rows", "5"], "--rows has 1 values for 2 inputs"),
    (["--rows", "5,11"], "has 10 rows but the mix asks 11"),
    (["--rows", "5,x"], "give whole numbers"),
    (["--rows", "5,-1"], "every value must be ≥ 0"),
    (["--rows", "1,1", "--weights", "1,1"], "not both"),
    (["--total", "5"], "--total applies with --weights only"),
    (["--weights", "0,0"], "--weights sum to 0"),
])
def test_bad_options_one_line_no_output(tmp_path, runner, args, message):
    a, b = sources(tmp_path)
    result = runner.invoke(cli, ["mix", a, b, "-o", str(tmp_path / "out"), *args])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_kind_mismatch_is_one_line(tmp_path):
    a = sources(tmp_path, (5,))[0]
    b = str(write_jsonl(tmp_path / "sft.jsonl", [{"instruction": "q", "output": "a"}]))
    with pytest.raises(DataprepError, match=r"holds sft records but .* holds text; mix inputs of one kind"):
        mix([a, b], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_summary(tmp_path, runner):
    a, b = sources(tmp_path)
    result = runner.invoke(cli, ["mix", a, b, "-o", str(tmp_path / "out"), "--weights", "0.5,0.5", "--total", "10"])
    assert result.exit_code == 0, result.output
    assert f"{a}: 5 of 30 rows" in result.output and "in 40 = out 10 + not sampled 30" in result.output


def test_recipe_convert_mix_split(tmp_path, shared_data):
    from dataprep.convert import convert
    from dataprep.pipeline import run_recipe, summary_table
    from dataprep.recipe import load_recipe

    convert(str(shared_data / "alpaca_en_demo.json"), str(tmp_path / "en"), limit=40)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
workdir: {tmp_path / "work"}
convert:
  input: {shared_data / "ko_alpaca_1040.json"}
  template: ko-alpaca
  limit: 60
mix:
  input: [convert, {tmp_path / "en"}]
  weights: [0.75, 0.25]
  total: 40
  seed: 0
split:
  val: 0.1
  test: 0.1
""")
    results = run_recipe(load_recipe(recipe))
    assert [r.stage for r in results] == ["convert", "mix", "split"]
    m = results[1].manifest
    assert [s["taken"] for s in m.get("sources")] == [30, 10] and m.counts.n_in == 100
    split_m = results[2].manifest
    assert split_m.get("splits") == {"train": 32, "val": 4, "test": 4}
    assert split_m.lineage.kind == "sft" and "split" in summary_table(results)
