"""`dataprep split`: parse options, call dataprep.split.split, print a summary."""

from __future__ import annotations

import click

from dataprep.options import click_options
from dataprep.split import SplitOptions


@click.command(
    "split",
    epilog="Example: dataprep split out/go -o out/go-split --val 0.05 --test 0.05",
)
@click.argument("input_path", metavar="INPUT", type=click.Path())
@click.option("-o", "--out", type=click.Path(), required=True, help="Output directory.")
@click_options(SplitOptions)
@click.option("--force", is_flag=True, help="Redo the work even if OUT is up to date.")
def command(input_path, out, force, **options):
    """Split records into train/val/test: seeded, stratified for classify, duplicates kept together.

    Writes OUT/train, OUT/val and OUT/test (each records.parquet + manifest.json, readable by any
    stage) and OUT/manifest.json (counts per split, groups, label shares).
    """
    from dataprep.split import split

    manifest = split(input_path, out, force=force, **options)
    if manifest.skipped:
        click.echo(f"{out} is up to date (same input and options); nothing to do. Use --force to redo it.")
    parts = manifest.get("splits") or {}
    click.echo(f"in {manifest.counts.n_in} = " + " + ".join(f"{k} {v}" for k, v in parts.items()))
    groups = manifest.get("groups") or {}
    click.echo(f"groups: {groups.get('groups')} ({groups.get('rows_in_shared_groups')} rows share a group; "
               f"largest {groups.get('largest')})")
    shares = manifest.get("label_shares")
    if shares:
        click.echo(f"stratified by {manifest.get('stratify')}: each label's rows within {shares['max_gap']:.4f} "
                   "of the split fractions")
    click.echo(f"wrote {', '.join(f'{out}/{k}' for k in parts)}")
