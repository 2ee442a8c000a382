"""The `dataprep` command group. Commands load lazily so `dataprep --help` stays instant."""

from __future__ import annotations

import importlib

import click

from dataprep import __version__
from dataprep.errors import DataprepError, os_error_message

# command name -> module in dataprep.commands that defines `command`
COMMANDS = {
    "convert": "convert",
    "run": "run",
    "validate": "validate",
    "dedupe": "dedupe",
    "filter": "filter",
    "mix": "mix",
    "split": "split",
    "tokenize": "tokenize",
    "tokenizer-train": "tokenizer_train",
    "stats": "stats",
    "inspect": "inspect",
    "train": "train",
    "merge": "merge",
    "generate": "generate",
}


class LazyGroup(click.Group):
    """Imports a command's module only when that command (or the help listing) needs it,
    and turns a DataprepError into one `Error: ...` line with a non-zero exit."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return importlib.import_module(f"dataprep.commands.{COMMANDS[name]}").command

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DataprepError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:  # outside a stage's own handling (a temporary directory, a tokenizer's files): one line
            raise click.ClickException(os_error_message(exc)) from None


@click.group(cls=LazyGroup, epilog="Example: dataprep convert data.csv --template alpaca -o out/records")
@click.version_option(__version__, prog_name="dataprep")
def cli() -> None:
    """Prepare and curate datasets for fine-tuning open LLMs: convert, dedupe, tokenize, train."""


def main() -> None:
    from dataprep.quiet import quiet_libraries

    quiet_libraries()
    try:
        cli()
    except SystemExit as exc:
        _leave_process_group(exc.code)
        raise


def _leave_process_group(code) -> None:
    """Under a distributed launcher: leave the process group and exit at once. A rank that exits
    through the interpreter's teardown with gloo's threads alive can abort ('terminate called
    without an active exception') after its work is done, turning a finished run into a failure."""
    import os
    import sys

    td = sys.modules.get("torch.distributed")
    if td is None or not td.is_available() or not td.is_initialized():
        return
    td.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))
