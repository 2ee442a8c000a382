"""Options declared once (dataprep.options): the click options come from the config dataclasses,
and the CLI, recipes and the stage functions check values the same way."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import click
import pytest

from dataprep.cli import cli
from dataprep.convert.stage import ConvertOptions
from dataprep.dedupe.methods import DedupeConfig
from dataprep.errors import DataprepError
from dataprep.options import click_options, opt, parse_options, schema
from dataprep.recipe import load_recipe
from dataprep.tokenize.rows import TokenizeOptions
from training.classify import ClassifyConfig, ClassifyOptions
from training.loop import LoopConfig, LoraOptions
from training.merge import MergeOptions
from training.run import TrainOptions
from training.sft import SFTConfig, SFTOptions


def _pairs(values: tuple[str, ...]) -> dict[str, str] | None:
    if any("=" not in v for v in values):
        raise ValueError("write K=V")
    return dict(v.split("=", 1) for v in values) or None


@dataclasses.dataclass(frozen=True)
class Demo:
    size: int = opt(3, "A size.", min=1)
    ratio: float = opt(0.5, "A ratio.", min=0, max=1, min_open=True)
    mode: Literal["a", "b"] = opt("a", "A mode.")
    names: tuple[str, ...] = opt(("x", "y"), "Names.", choices=("x", "y", "z"))
    verbose: bool = opt(False, "Talk.")
    header: bool = opt(True, "The input has no header.", flag="--no-header")
    cache: bool = opt(True, "Do not cache.")
    fmt: str = opt("parquet", "Format.", choices=("parquet", "jsonl"), flag="--format")
    pairs: dict[str, str] | None = opt(None, "K=V (repeatable).", flag="--pair", multiple=True, cli=_pairs)
    limit: int | None = opt(None, "At most.", min=1)
    impl: str = opt("auto", "Implementation.", name="attn")


@click.command()
@click_options(Demo)
def demo(**options):
    click.echo(json.dumps(options, sort_keys=True))


def run_demo(runner, *args):
    result = runner.invoke(demo, list(args))
    return result, (json.loads(result.output) if result.exit_code == 0 else None)


def test_click_options_come_from_the_dataclass(runner):
    _, got = run_demo(runner)
    assert got == {"size": 3, "ratio": 0.5, "mode": "a", "names": ["x", "y"], "verbose": False, "header": True,
                   "cache": True, "fmt": "parquet", "pairs": None, "limit": None, "attn": "auto"}
    _, got = run_demo(runner, "--size", "7", "--mode", "b", "--names", "z,x", "--verbose", "--no-header", "--no-cache",
                      "--format", "jsonl", "--pair", "a=1", "--pair", "b=2", "--limit", "5", "--attn", "sdpa")
    assert got == {"size": 7, "ratio": 0.5, "mode": "b", "names": ["z", "x"], "verbose": True, "header": False,
                   "cache": False, "fmt": "jsonl", "pairs": {"a": "1", "b": "2"}, "limit": 5, "attn": "sdpa"}
    assert parse_options(Demo, {"names": ["z"], "attn": "x"}, "demo") == Demo(names=("z",), impl="x")
    help_text = runner.invoke(demo, ["--help"]).output
    for shown in ("--size INTEGER RANGE", "[default: 3; x>=1]", "0<x<=1", "--mode [a|b]", "--no-header", "--no-cache",
                  "--format [parquet|jsonl]", "Any of: x, y, z.", "[default: x,y]"):
        assert shown in help_text, shown


@pytest.mark.parametrize("args, needle", [
    (["--size", "0"], "0 is not in the range x>=1"),
    (["--ratio", "0"], "0<x<=1"),
    (["--mode", "c"], "'c' is not one of 'a', 'b'"),
    (["--names", "x,w"], "'w' is not one of x, y, z"),
    (["--pair", "oops"], "write K=V"),
    (["--size", "lots"], "'lots' is not a valid integer"),
])
def test_a_bad_value_is_a_usage_error(runner, args, needle):
    result, _ = run_demo(runner, *args)
    assert result.exit_code == 2 and needle in result.output, result.output


def test_parse_options_lists_every_problem_on_one_line():
    with pytest.raises(DataprepError) as err:
        parse_options(Demo, {"size": 0, "mode": "c", "sise": 1}, "demo")
    message = str(err.value)
    assert "\n" not in message
    assert message == ("demo.size: 0 is out of range; expected an int ≥ 1; demo.mode: 'c' is not one of a, b; "
                       "demo.sise: unknown option; demo takes size, ratio, mode, names, verbose, header, cache, fmt, "
                       "pairs, limit, attn")


# ---------------------------------------------------------------- the real commands


@pytest.mark.parametrize("command, config, args", [
    ("convert", ConvertOptions, ["x.csv", "-o", "o"]),
    ("dedupe", DedupeConfig, ["x.csv", "-o", "o"]),
    ("tokenize", TokenizeOptions, ["{records}", "-o", "o"]),
    ("train", TrainOptions, ["{shards}", "-o", "o"]),
    ("merge", MergeOptions, ["{shards}", "-o", "o"]),
])
def test_the_cli_defaults_are_the_dataclass_defaults(tmp_path, command, config, args):
    (tmp_path / "records.jsonl").write_text("")
    args = [a.format(records=tmp_path / "records.jsonl", shards=tmp_path) for a in args]
    ctx = cli.get_command(None, command).make_context(command, args)
    defaults = {key: o.default for key, o in schema(config).items()}
    assert {k: v for k, v in ctx.params.items() if k in defaults} == defaults
    assert set(defaults) <= set(ctx.params)


@pytest.mark.parametrize("args, needle", [
    (["tokenize", "{records}", "-o", "{out}", "--batch-size", "0"], "Invalid value for '--batch-size': 0 is not in the range x>=1"),
    (["tokenize", "{records}", "-o", "{out}", "--batch-size", "-3"], "'--batch-size': -3 is not in the range x>=1"),
    (["tokenize", "{records}", "-o", "{out}", "--num-shards", "0"], "'--num-shards': 0 is not in the range x>=1"),
    (["tokenize", "{records}", "-o", "{out}", "--shard-size", "lots"], "'--shard-size': 'lots' is not a size like 500MB"),
    (["dedupe", "{records}", "-o", "{out}", "--num-perm", "0"], "'--num-perm': 0 is not in the range x>=1"),
    (["dedupe", "{records}", "-o", "{out}", "--methods", "exact,fuzzy"], "'fuzzy' is not one of exact, ngram, near, semantic"),
    (["dedupe", "{records}", "-o", "{out}", "--methods", "exact,exact"], "exact,exact names a method twice"),
    (["train", "{dir}", "-o", "{out}", "--lora-r", "0"], "'--lora-r': 0 is not in the range x>=1"),
    (["convert", "{records}", "-o", "{out}", "--batch-rows", "0"], "'--batch-rows': 0 is not in the range x>=1"),
])
def test_a_bad_flag_is_one_error_line_without_traceback(runner, tmp_path, args, needle):
    records = tmp_path / "records.jsonl"
    records.write_text('{"text": "a"}\n')
    args = [a.format(records=records, out=tmp_path / "out", dir=tmp_path) for a in args]
    result = runner.invoke(cli, args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and needle in errors[0], result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- the stage functions


def test_stage_functions_check_their_keyword_options(tmp_path):
    from dataprep.convert import convert
    from dataprep.dedupe import dedupe
    from dataprep.tokenize import tokenize
    from training.merge import merge_adapter
    from training.run import train

    out = tmp_path / "out"
    with pytest.raises(DataprepError, match=r"^tokenize.max_len: -1 is out of range; expected an int ≥ 2$"):
        tokenize(tmp_path, out, max_len=-1)
    with pytest.raises(DataprepError, match=r"^convert.kindd: unknown option; convert takes allow_empty, engine, ray_address, kind, template, mapping"):
        convert(["x.csv"], out, kindd="sft")
    with pytest.raises(DataprepError, match=r"^dedupe.num_perm: 0 is out of range; expected an int ≥ 1$"):
        dedupe(tmp_path, out, num_perm=0)
    with pytest.raises(DataprepError, match=r"^train.lora_r: 0 is out of range; expected an int ≥ 1; train.task: 'ppo' is not one of"):
        train(str(tmp_path), str(out), lora_r=0, task="ppo")
    with pytest.raises(DataprepError, match=r"^merge.dtype: 'int4' is not one of bfloat16, float16, float32$"):
        merge_adapter(tmp_path, out, dtype="int4")
    assert not out.exists()


# ---------------------------------------------------------------- recipes


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_range_error_in_a_recipe_names_file_line_and_key(tmp_path):
    path = write(tmp_path, "tokenize:\n  input: data\n  max_len: -1\n")
    with pytest.raises(DataprepError) as err:
        load_recipe(path)
    assert str(err.value) == f"{path}:3: tokenize.max_len: -1 is out of range; expected an int ≥ 2"


def test_validate_lists_every_problem_with_its_line(tmp_path, runner):
    path = write(tmp_path, "name: three\n"
                           "dedupe:\n"
                           "  input: data\n"
                           "  num_perm: 0\n"
                           "tokenize:\n"
                           "  max_lenght: 512\n"
                           "  overflow: wrap\n"
                           "train:\n"
                           "  lora_r: 16\n")
    result = runner.invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{path}:4: dedupe.num_perm: 0 is out of range; expected an int ≥ 1",
        f"{path}:6: tokenize.max_lenght: unknown option; tokenize takes input, allow_empty, engine, ray_address, tokenizer, max_len, overflow, stride, "
        "train_on, seam, reasoning, split_turns, tools_in_system, on_mismatch, chat_template, train_on_inputs, pack, num_shards, shard_size, num_proc, batch_size",
        f"{path}:7: tokenize.overflow: 'wrap' is not one of truncate-prompt, truncate, drop, error, split",
    ]


def test_a_duplicate_key_names_both_lines(tmp_path):
    path = write(tmp_path, "tokenize:\n  input: data\n  max_len: 256\n  pack: true\n  max_len: 512\n")
    with pytest.raises(DataprepError) as err:
        load_recipe(path)
    assert str(err.value) == f"{path}:5: tokenize.max_len: duplicate key (first on line 3); keep one"
    path.write_text("tokenize:\n  input: data\ntrain: {}\ntokenize: {}\n")
    with pytest.raises(DataprepError, match=r"r.yaml:4: tokenize: duplicate key \(first on line 1\)"):
        load_recipe(path)


def test_a_recipe_that_is_not_utf8_or_a_workdir_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "r.yaml"
    path.write_bytes("name: 한국어\ntokenize: {input: x}\n".encode("cp949"))
    with pytest.raises(DataprepError) as err:
        load_recipe(path)
    assert str(err.value).startswith(f"{path}: not UTF-8 text") and "\n" not in str(err.value)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("")
    path = write(tmp_path, "workdir: taken\ntokenize: {input: x}\n")
    with pytest.raises(DataprepError) as err:
        load_recipe(path)
    assert str(err.value) == f"{path}:1: workdir: taken is a file; name a directory"


# ---------------------------------------------------------------- each default once


# training's option declarations (every other stage has one dataclass)
TRAINING = (LoopConfig, LoraOptions, SFTOptions, ClassifyOptions, SFTConfig, ClassifyConfig, TrainOptions)
# the defaults that differ by task: each task config states its own, TrainOptions says None ("the task's")
TASK_DEFAULTS = {"model", "lr", "warmup_ratio", "weight_decay", "val_size"}


def test_no_option_default_is_declared_twice():
    declared: dict[str, list[str]] = {}
    for config in TRAINING:
        for name in config.__dict__.get("__annotations__", {}):
            declared.setdefault(name, []).append(config.__name__)
    twice = {name: where for name, where in declared.items() if len(where) > 1}
    assert set(twice) <= TASK_DEFAULTS, twice
    assert all(getattr(TrainOptions(), name) is None for name in TASK_DEFAULTS)
    # LoRA's options are one shared declaration, not equal copies
    for config in (SFTConfig, ClassifyConfig, TrainOptions):
        for f in dataclasses.fields(LoraOptions):
            assert config.__dataclass_fields__[f.name] is f
    assert TrainOptions().lora_r == SFTConfig().lora_r == ClassifyConfig(model="m").lora_r == LoraOptions().lora_r


def test_the_commands_declare_no_option_defaults():
    commands = Path(__file__).resolve().parents[1] / "dataprep" / "commands"
    for name in ("convert", "dedupe", "tokenize", "train", "merge"):
        text = (commands / f"{name}.py").read_text()
        for literal in ("2048", "lora", "default=16", "smollm2", "minilm", "bfloat16\", \"float16", "50_000", "128"):
            assert literal not in text, (name, literal)
