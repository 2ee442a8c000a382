"""`dataprep inspect SHARDS --row N`: a decoded row with its trained tokens marked."""

from __future__ import annotations

import click

EXAMPLE = "Example: dataprep inspect out/alpaca-tok --row 0"


@click.command(epilog=EXAMPLE)
@click.argument("shards", type=click.Path(exists=True, file_okay=False))
@click.option("--row", "rows", type=int, multiple=True, default=(0,), show_default=True,
              help="Row number to show (repeatable).")
@click.option("--color/--no-color", default=None, help="Colour trained tokens (default: when on a terminal; "
              "otherwise trained text is put between [[ and ]]).")
@click.option("--tokens", is_flag=True, help="Also list every token id, its text and its label.")
def command(shards, rows, color, tokens):
    """Decode rows of a tokenized output and mark the trained tokens, so the mask can be checked by eye.
    Packed rows are shown sequence by sequence."""
    import sys

    from dataprep.inspect_shards import render_row

    use_color = sys.stdout.isatty() if color is None else color
    for n in rows:
        click.echo(render_row(shards, n, color=use_color, tokens=tokens), color=use_color)
