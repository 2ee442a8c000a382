"""The CLI is documentation: every command has help that ends with an example, and the README names it."""

from __future__ import annotations

import subprocess
import sys

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
