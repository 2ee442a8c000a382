"""`dataprep merge`: merge a LoRA adapter into its bf16 base and save a standalone model."""

from __future__ import annotations

import click

from dataprep.options import click_options
from training.merge import MergeOptions


@click.command("merge", epilog="Example: dataprep merge out/adapter -o out/merged")
@click.argument("adapter", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Output model directory.")
@click_options(MergeOptions)
@click.option("--force", is_flag=True, help="Merge again even if OUT is up to date.")
def command(adapter, out, dtype, force) -> None:
    """Merge ADAPTER (the output of `dataprep train`) into its base model and save it to OUT."""
    from training.merge import merge_adapter

    m = merge_adapter(adapter, out, dtype=dtype, force=force)
    if m.skipped:
        click.echo(f"{out} is up to date (same adapter and dtype); nothing to do (--force merges again)")
    else:
        click.echo(f"merged {adapter} into its base ({m.get('params'):,} params, {dtype}); wrote {out}")
