"""`dataprep filter`: parse options, call dataprep.filter.filter, print a summary."""

from __future__ import annotations

import click

from dataprep.filter.config import FilterConfig
from dataprep.options import click_options


@click.command(
    "filter",
    epilog="Example: dataprep filter out/ko -o out/ko-f --lang ko --pii redact --quality",
)
@click.argument("input_path", metavar="INPUT", type=click.Path())
@click.option("-o", "--out", type=click.Path(), required=True, help="Output directory.")
@click_options(FilterConfig)
@click.option("--allow-empty", is_flag=True, help="Write an output even when no row is left.")
@click.option("--force", is_flag=True, help="Redo the work even if OUT is up to date.")
def command(input_path, out, allow_empty, force, **options):
    """Remove rows by length, language, PII and quality rules, and report them.

    Writes OUT/records.parquet (kept rows; with --dry-run every row, annotated), removed.parquet
    (each removed row with filter, filter_reason, filter_score, filter_detail), report.json,
    report.html and manifest.json.
    """
    from dataprep.filter import filter as run_filter

    manifest = run_filter(input_path, out, force=force, allow_empty=allow_empty, **options)
    if manifest.skipped:
        click.echo(f"{out} is up to date (same input and options); nothing to do. Use --force to redo it.")
    if manifest.get("dry_run"):
        would = manifest.get("would_remove") or {}
        click.echo(f"dry run: would remove {sum(would.values())} of {manifest.counts.n_in}"
                   + (f" ({', '.join(f'{k}: {v}' for k, v in would.items())})" if would else ""))
    else:
        click.echo(manifest.counts.line(removed_word="removed"))
    click.echo(f"wrote {out}/records.parquet, removed.parquet, report.html")
