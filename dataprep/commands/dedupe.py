"""`dataprep dedupe`: parse options, call dataprep.dedupe.dedupe (or .sweep), print a summary."""

from __future__ import annotations

import click

from dataprep.dedupe.methods import DedupeConfig
from dataprep.options import click_options


@click.command(
    "dedupe",
    epilog="Example: dataprep dedupe out/alpaca -o out/alpaca-dedup --keep longest",
)
@click.argument("input_path", metavar="INPUT", type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="Output directory (required unless --sweep).")
@click_options(DedupeConfig)
@click.option("--sweep", default=None, help="START:STOP:STEP: print rows removed per semantic threshold; write only a plot.")
@click.option("--sweep-plot", type=click.Path(), default=None, help="Where --sweep writes its PNG [default: OUT.sweep.png or dedupe_sweep.png].")
@click.option("--no-cache", is_flag=True, help="Do not read or write the embedding cache.")
@click.option("--force", is_flag=True, help="Redo the work even if OUT is up to date.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars.")
def command(input_path, out, sweep, sweep_plot, no_cache, force, progress, **options):
    """Remove exact, near (MinHash) and semantic (embedding) duplicates, and report them; with
    --against EVAL, remove the rows that match an eval set's row instead (decontamination).

    Writes OUT/records.parquet (kept rows), removed.parquet (each removed row with kept_id,
    method, score), pairs.parquet, report.json, report.html and manifest.json.
    """
    from dataprep import dedupe as dd

    if click.get_current_context().get_parameter_source("methods") is click.core.ParameterSource.DEFAULT:
        options.pop("methods")  # not given: the default methods, semantic skipped where --model cannot read the texts
    if sweep:
        plot = sweep_plot or (f"{str(out).rstrip('/')}.sweep.png" if out else "dedupe_sweep.png")
        options.pop("threshold")
        rows = dd.sweep(input_path, dd.parse_sweep(sweep), plot, cache=not no_cache, progress=progress, **options)
        click.echo("threshold  removed  kept")
        for r in rows:
            click.echo(f"{r['threshold']:9.3f}  {r['removed']:7d}  {r['kept']:4d}")
        click.echo(f"plot: {plot}")
        return
    if not out:
        raise click.UsageError("missing -o/--out (only --sweep runs without an output directory)")
    manifest = dd.dedupe(input_path, out, force=force, cache=not no_cache, progress=progress, **options)
    if manifest.skipped:
        click.echo(f"{out} is up to date (same input and options); nothing to do. Use --force to redo it.")
    for w in manifest.get("warnings", []):
        click.echo(f"warning: {w}")
    click.echo(manifest.counts.line(removed_word="removed"))
    pairs = "" if options.get("against") else " pairs.parquet,"
    click.echo(f"wrote {out}/records.parquet, removed.parquet,{pairs} report.html")
