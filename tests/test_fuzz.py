"""Malformed inputs and bad options, each through the CLI: a non-zero exit, one `Error:` line, no
traceback, and nothing left behind (no output, no hidden temporary or lock beside it)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from dataprep.cli import cli

GOOD_SFT = '{"instruction": "Say hi", "output": "hi"}\n'


def write(tmp: Path, name: str, data: str | bytes) -> str:
    path = tmp / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return str(path)


def records(tmp: Path) -> str:
    """A valid convert output, for the stages after it."""
    from dataprep.convert import convert

    convert([write(tmp, "good.jsonl", GOOD_SFT * 3)], tmp / "records")
    return str(tmp / "records")


# name -> function(tmp) returning the CLI arguments (the output directory is always tmp/"out")
CASES = {
    "missing input": lambda t: ["convert", str(t / "nope.jsonl")],
    "malformed JSON line": lambda t: ["convert", write(t, "a.jsonl", GOOD_SFT + '{"instruction": "x", \n')],
    "JSON array of numbers": lambda t: ["convert", write(t, "a.json", "[1, 2, 3]")],
    "JSON scalar": lambda t: ["convert", write(t, "a.json", '"just a string"')],
    "deeply nested JSON": lambda t: ["convert", write(t, "a.json", "[" * 50_000 + "]" * 50_000)],
    "empty file": lambda t: ["convert", write(t, "a.jsonl", "")],
    "unclosed CSV quote": lambda t: ["convert", write(t, "a.csv", 'instruction,output\n"a,b\nc,d\n')],
    "binary garbage CSV": lambda t: ["convert", write(t, "a.csv", bytes(range(256)) * 50)],
    "unknown format": lambda t: ["convert", write(t, "a.xyz", GOOD_SFT)],
    "truncated gzip": lambda t: ["convert", write(t, "a.jsonl.gz", gzip.compress(GOOD_SFT.encode() * 50)[:40])],
    "missing column": lambda t: ["convert", write(t, "a.jsonl", '{"text": "only text"}\n')],
    "map to unknown column": lambda t: ["convert", write(t, "a.jsonl", GOOD_SFT), "--map", "output=nope"],
    "unknown template field": lambda t: ["convert", write(t, "a.jsonl", GOOD_SFT), "--template", "{nope} {instruction}"],
    "every row rejected": lambda t: ["convert", write(t, "a.jsonl", '{"instruction": "", "output": ""}\n' * 3)],
    "unknown kind": lambda t: ["convert", write(t, "a.jsonl", GOOD_SFT), "--kind", "nope"],
    "batch rows 0": lambda t: ["convert", write(t, "a.jsonl", GOOD_SFT), "--batch-rows", "0"],
    "row-fn file missing": lambda t: ["convert", write(t, "a.jsonl", GOOD_SFT), "--row-fn", str(t / "no.py") + ":f"],
    "label names missing": lambda t: ["convert", write(t, "a.jsonl", '{"text": "a", "labels": "0"}\n'), "--kind",
                                      "classify", "--label-names", str(t / "no.txt")],
    "-o is a file": lambda t: ["convert", write(t, "a.jsonl", GOOD_SFT), "-o", write(t, "taken", "x")],
    "dedupe of a markdown file": lambda t: ["dedupe", write(t, "notes.md", "# hello\n")],
    "dedupe --num-perm 0": lambda t: ["dedupe", records(t), "--num-perm", "0"],
    "dedupe --threshold 1.5": lambda t: ["dedupe", records(t), "--threshold", "1.5"],
    "dedupe --methods fuzzy": lambda t: ["dedupe", records(t), "--methods", "exact,fuzzy"],
    "dedupe -o equal to its input": lambda t: ["dedupe", records(t), "-o", str(t / "records")],
    "tokenize --batch-size 0": lambda t: ["tokenize", records(t), "--batch-size", "0"],
    "tokenize --shard-size lots": lambda t: ["tokenize", records(t), "--shard-size", "lots"],
    "tokenize --num-shards 0": lambda t: ["tokenize", records(t), "--num-shards", "0"],
    "tokenize --max-len 1": lambda t: ["tokenize", records(t), "--max-len", "1"],
    "tokenizer folder without a tokenizer": lambda t: ["tokenize", records(t), "--tokenizer", str(t / "records")],
    "tokenize a directory without records": lambda t: ["tokenize", str((t / "emptydir").mkdir() or t / "emptydir")],
    "split --val 0.5 --test 0.5": lambda t: ["split", records(t), "--val", "0.5", "--test", "0.5"],
    "split with no row for val": lambda t: ["split", records(t), "--val", "0.01", "--test", "0.3"],
    "mix more rows than there are": lambda t: ["mix", records(t), "--rows", "9"],
    "mix of two kinds": lambda t: ["mix", records(t), write(t, "text.jsonl", '{"text": "a"}\n')],
    "convert --quote-char of two characters": lambda t: ["convert", write(t, "a.csv", "instruction,output\na,b\n"),
                                                         "--quote-char", "ab"],
    "convert --delimiter of two characters": lambda t: ["convert", write(t, "a.csv", "instruction,output\na,b\n"),
                                                        "--delimiter", "::"],
    "tokenize --chat-template missing": lambda t: ["tokenize", records(t), "--chat-template", str(t / "no.jinja")],
    "recipe whose first stage is a list": lambda t: ["validate", write(t, "r.yaml", "convert:\n  - a.jsonl\n")],
    "recipe whose first stage has no input": lambda t: ["validate", write(t, "r.yaml", "convert:\n  kind: sft\n")],
    "convert --keep-columns nope": lambda t: ["convert", write(t, "a.jsonl", GOOD_SFT), "--keep-columns", "nope"],
    "non-UTF-8 recipe": lambda t: ["validate", write(t, "r.yaml", "name: \xff\xfe\n".encode("latin-1"))],
    "recipe with duplicate keys": lambda t: ["validate", write(t, "r.yaml", "name: a\nname: b\nconvert:\n  input: x\n")],
    "recipe max_len -1": lambda t: ["validate", write(t, "r.yaml", "convert:\n  input: x\ntokenize:\n  max_len: -1\n")],
}
NO_OUT = {"validate"}  # commands that take no -o


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_error_line_and_leaves_nothing(tmp_path, runner, name):
    args = CASES[name](tmp_path)
    if args[0] not in NO_OUT and "-o" not in args:
        args += ["-o", str(tmp_path / "out")]
    before = {p.name for p in tmp_path.iterdir()} - {"out"}
    result = runner.invoke(cli, args)
    assert result.exit_code != 0, f"{name}: exit 0\n{result.output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), f"{name}: traceback {result.exception!r}"
    if args[0] == "validate":  # validate lists every problem, one `FILE:LINE: key: problem` line each
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert lines and all(line.startswith(args[1]) for line in lines), f"{name}: {result.output}"
    else:
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, f"{name}: {result.output}"
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists(), name
    assert {p.name for p in tmp_path.iterdir()} == before, f"{name}: left {set(p.name for p in tmp_path.iterdir()) - before}"



def test_an_os_error_outside_a_stage_is_one_error_line(tmp_path, runner, monkeypatch):
    """A full disk or a file-size limit before the stage's own handling (tokenize with `ulimit -f 0`
    failed in tempfile.gettempdir with a traceback)."""
    from dataprep import models

    def no_space(*a, **k):
        raise FileNotFoundError(2, "No usable temporary directory found in ['/tmp']")

    monkeypatch.setattr(models, "load_tokenizer", no_space)
    result = runner.invoke(cli, ["tokenize", records(tmp_path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1 and (result.exception is None or isinstance(result.exception, SystemExit))
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: No usable temporary directory found in ['/tmp']; check the paths, free space, "
                      "file-size limits and permissions"], result.output
    assert not (tmp_path / "out").exists()
