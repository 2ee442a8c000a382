"""`dataprep stats SHARDS`: length percentiles of a tokenized output and a length histogram PNG."""

from __future__ import annotations

import click

EXAMPLE = "Example: dataprep stats out/alpaca-tok --plot lengths.png"


@click.command(epilog=EXAMPLE)
@click.argument("shards", type=click.Path(exists=True, file_okay=False))
@click.option("--plot", type=click.Path(dir_okay=False), default="lengths.png", show_default=True,
              help="Where to write the histogram PNG.")
def command(shards, plot):
    """Print sequence-length percentiles (of the sequences, also inside packed rows), token counts, and the
    share of rows each --max-len would keep whole; write a length histogram PNG."""
    from dataprep.inspect_shards import length_stats, plot_lengths

    s = length_stats(shards)
    ln = s["length"]
    click.echo(f"{s['rows']:,} rows, {s['sequences']:,} sequences, {s['tokens']:,} tokens, "
               f"{s['trainable']:,} trained ({s['trainable'] / max(s['tokens'], 1):.1%})")
    click.echo(f"length: min {ln['min']}, p50 {ln['p50']}, p90 {ln['p90']}, p95 {ln['p95']}, p99 {ln['p99']}, "
               f"max {ln['max']}, mean {ln['mean']}")
    click.echo("fits whole: " + ", ".join(f"{k} {v:.1%}" for k, v in s["fits"].items()))
    if s.get("packing_efficiency") is not None:
        click.echo(f"packing efficiency {s['packing_efficiency']:.2%}")
    plot_lengths(s["lengths"], plot, title=str(shards))
    click.echo(f"wrote {plot}")
