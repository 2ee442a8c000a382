"""`dataprep convert SRC... -o OUT`: raw data → canonical records, rejects and a manifest."""

from __future__ import annotations

import click

from dataprep.records import KINDS

EXAMPLE = "Example: dataprep convert data.json --template alpaca -o out/records"


def _parse_map(values: tuple[str, ...]) -> dict[str, str]:
    mapping = {}
    for item in values:
        field, sep, column = item.partition("=")
        if not sep or not field or not column:
            raise click.BadParameter(f"{item!r}: write FIELD=COLUMN, e.g. instruction=goal", param_hint="--map")
        mapping[field.strip()] = column.strip()
    return mapping


@click.command(epilog=EXAMPLE)
@click.argument("sources", nargs=-1, required=True)
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--kind", type=click.Choice(KINDS), default="sft", show_default=True, help="Record kind to produce.")
@click.option("--template", help="sft prompt template: alpaca, ko-alpaca, latex, a format string with {column} "
              "fields, or a template file (.txt, .json, .yaml). Default: alpaca.")
@click.option("--map", "mapping", multiple=True, metavar="FIELD=COLUMN",
              help="Take a record field from a source column (repeatable), e.g. --map instruction=goal.")
@click.option("--row-fn", metavar="MODULE:FUNCTION", help="A function row dict → canonical fields; "
              "its exceptions become rejects. MODULE may be a path to a .py file.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "jsonl"]), default="parquet", show_default=True)
@click.option("--label-names", type=click.Path(dir_okay=False),
              help="classify: file with one label name a line; labels given as ids index it (GoEmotions emotions.txt).")
@click.option("--label-sep", default=",", show_default=True, help="classify: separator of labels given as one string.")
@click.option("--delimiter", help="CSV/TSV field separator (detected when omitted; \\t for tab).")
@click.option("--encoding", help="Text encoding, e.g. cp949, euc-kr, latin-1 (detected when omitted).")
@click.option("--quote-char", default="auto", show_default=True,
              help='CSV/TSV quote character, or "none"; auto: " for CSV, none for .tsv.')
@click.option("--no-header", is_flag=True, help="CSV/TSV has no header row; columns are column_1, column_2, ...")
@click.option("--split", help="Split of a datasets directory or hub: id (default: train).")
@click.option("--batch-rows", type=click.IntRange(min=1), default=50_000, show_default=True,
              help="Rows converted and written at a time; bounds memory.")
@click.option("--limit", type=click.IntRange(min=1), help="Read only the first N input rows (to try on a slice).")
@click.option("--force", is_flag=True, help="Redo the work even if OUT is up to date.")
def command(sources, out, kind, template, mapping, row_fn, fmt, label_names, label_sep, delimiter, encoding,
            quote_char, no_header, split, batch_rows, limit, force):
    """Convert CSV/TSV, JSON, JSONL, Parquet, datasets directories or hub:NAME[:split] ids into canonical
    records of one kind. Writes OUT/records.parquet (or .jsonl), OUT/rejects.jsonl and OUT/manifest.json."""
    from dataprep.convert import convert

    if delimiter == "\\t":
        delimiter = "\t"
    manifest = convert(list(sources), out, kind=kind, template=template, mapping=_parse_map(mapping), row_fn=row_fn,
                       fmt=fmt, force=force, batch_rows=batch_rows, limit=limit, label_names=label_names, label_sep=label_sep,
                       delimiter=delimiter, encoding=encoding, has_header=not no_header, split=split,
                       quote_char=None if quote_char.lower() == "none" else quote_char)
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
