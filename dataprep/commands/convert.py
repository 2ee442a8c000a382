"""`dataprep convert SRC... -o OUT`: raw data → canonical records, rejects and a manifest."""

from __future__ import annotations

import click

from dataprep.convert.stage import ConvertOptions
from dataprep.options import click_options

EXAMPLE = "Example: dataprep convert data.json --template alpaca -o out/records"


@click.command(epilog=EXAMPLE)
@click.argument("sources", nargs=-1, required=True)
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click_options(ConvertOptions)
@click.option("--force", is_flag=True, help="Redo the work even if OUT is up to date.")
def command(sources, out, force, **options):
    """Convert CSV/TSV, JSON, JSONL, Parquet, datasets directories or hub:NAME[:split] ids into canonical
    records of one kind. Writes OUT/records.parquet (or .jsonl), OUT/rejects.jsonl and OUT/manifest.json."""
    from dataprep.convert import convert

    manifest = convert(list(sources), out, force=force, **options)
    kind, fmt = options["kind"], options["fmt"]
    if manifest.skipped:
        click.echo(f"{out} is up to date (fingerprint {manifest.fingerprint}); skipped. Use --force to redo.")
    else:
        secs = sum(manifest.timings.values())
        click.echo(f"convert ({kind}): {manifest.counts.line()} in {secs:.1f}s")
        click.echo(f"wrote {out}/records.{fmt}, rejects.jsonl, manifest.json")
    if manifest.get("ignored_columns"):
        click.echo(f"ignored columns (in no record field): {', '.join(manifest.get('ignored_columns'))}; "
                   "use one with --map FIELD=COLUMN")
    stats = manifest.get("length_stats") or {}
    if stats:
        parts = ", ".join(f"{k} {v['p50']:.0f}/{v['p95']:.0f}/{v['max']}" for k, v in stats.items())
        click.echo(f"lengths (p50/p95/max; chat: turns, chars): {parts}")
    if manifest.lineage.label_names:
        click.echo(f"{len(manifest.lineage.label_names)} labels")
