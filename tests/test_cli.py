"""The CLI is documentation: every command has help that ends with an example, and the README names it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dataprep import __version__
from dataprep.cli import COMMANDS, cli
from tests.conftest import REPO


def test_version(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_group_help_ends_with_example(runner):
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert result.output.strip().splitlines()[-1].strip().startswith("Example: dataprep ")
    for name in COMMANDS:
        assert name in result.output


def test_every_command_has_help_with_example_and_is_in_readme(runner):
    readme = (REPO / "README.md").read_text()
    for name in COMMANDS:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, result.output
        last = result.output.strip().splitlines()[-1].strip()
        assert last.startswith(f"Example: dataprep {name}"), (name, last)
        assert f"dataprep {name}" in readme, f"README does not mention `dataprep {name}`"
        assert "%%" not in result.output, f"{name} --help shows a doubled % (click help strings are not %-formatted)"


def test_a_dataprep_error_is_one_line_and_exit_status_1(runner):
    result = runner.invoke(cli, ["generate", "some-model"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: no prompt given; pass --prompt TEXT or --prompts-file FILE"


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys; from dataprep.cli import cli; "
        "from click.testing import CliRunner; CliRunner().invoke(cli, ['--help']); "
        f"[cli.get_command(None, n) for n in {sorted(COMMANDS)!r}]; "
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'peft', 'polars') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "", f"--help imported {out.stdout.strip()}"


NOISE = ("gemm_4bit_forward", "Loading weights", "FutureWarning", "is_gradient_checkpointing")


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["main", "cli"])
def test_training_log_is_clean_from_the_command_line(tmp_path, entry):
    """Through `main` (the installed `dataprep` script) the libraries' noise is gone; calling the
    click group directly (as a library user would embed it) shows what `main` silences."""
    from tests.train_helpers import sft_rows, tiny_causal_lm, tiny_tokenizer, write_shards

    model = tiny_causal_lm(tmp_path / "model")
    shards = write_shards(tmp_path / "shards", sft_rows(16), "sft", tiny_tokenizer())
    code = f"from dataprep.cli import {entry}; {entry}()"
    args = [sys.executable, "-c", code, "train", str(shards), "--model", str(model), "--max-steps", "1",
            "--quant", "4bit", "--report-to", "none", "-o", str(tmp_path / "out")]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    noise = [n for n in NOISE if n in result.stderr]
    assert (noise == []) if entry == "main" else noise, result.stderr[-2000:]
