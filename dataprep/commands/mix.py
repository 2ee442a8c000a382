"""`dataprep mix`: parse options, call dataprep.mix.mix, print a summary."""

from __future__ import annotations

import click

from dataprep.mix import MixOptions
from dataprep.options import click_options


@click.command("mix", epilog="Example: dataprep mix out/ko out/en -o out/mix --weights 0.7,0.3")
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out", type=click.Path(), required=True, help="Output directory.")
@click_options(MixOptions)
@click.option("--force", is_flag=True, help="Redo the work even if OUT is up to date.")
def command(inputs, out, force, **options):
    """Mix records of one kind from several inputs by row counts or weights, seeded.

    Writes OUT/records.parquet and OUT/manifest.json (rows each input had and gave).
    """
    from dataprep.mix import mix

    manifest = mix(list(inputs), out, force=force, **options)
    if manifest.skipped:
        click.echo(f"{out} is up to date (same inputs and options); nothing to do. Use --force to redo it.")
    for s in manifest.get("sources") or []:
        click.echo(f"{s['input']}: {s['taken']} of {s['rows']} rows")
    click.echo(manifest.counts.line(removed_word="not sampled").split(" (")[0])
    for w in manifest.get("warnings") or []:
        click.echo(f"warning: {w}")
    click.echo(f"wrote {out}/records.parquet")
