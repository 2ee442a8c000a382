"""`dataprep inspect SHARDS --row N`: a decoded row with its trained tokens marked."""

from __future__ import annotations

import click

EXAMPLE = "Example: dataprep inspect out/alpaca-tok --row 0"


@click.command(epilog=EXAMPLE)
@click.argument("shards", type=click.Path(exists=True, file_okay=False))
@click.option("--row", "rows", type=click.IntRange(min=0), multiple=True, help="Row number to show (repeatable; default 0).")
@click.option("--color/--no-color", default=None, help="Colour trained tokens (default: when on a terminal; "
              "otherwise trained text is put between [[ and ]]).")
@click.option("--tokens", is_flag=True, help="Also list every token id, its text and its label.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False),
              help="Also write a browsable HTML page of rows --first N (or the --row rows) with trained tokens highlighted.")
@click.option("--first", type=click.IntRange(min=1), default=50, show_default=True, help="Rows in the --html page when no --row is given.")
@click.option("--fidelity", is_flag=True, help="Show the fidelity check instead: turns checked, mismatches by reason, "
              "and the rows rejected for one.")
def command(shards, rows, color, tokens, html_path, first, fidelity):
    """Decode rows of a tokenized output and mark the trained tokens, so the mask can be checked by eye.
    Packed rows are shown sequence by sequence."""
    import sys

    from dataprep.inspect_shards import fidelity_report, render_rows, write_html

    if fidelity:
        click.echo(fidelity_report(shards))
        return
    if html_path:
        page = write_html(shards, html_path, list(rows) or None, first=first)
        click.echo(f"wrote {page}")
        if not rows:
            return
    use_color = sys.stdout.isatty() if color is None else color
    for text in render_rows(shards, list(rows) or [0], color=use_color, tokens=tokens):
        click.echo(text, color=use_color)
