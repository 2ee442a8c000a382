"""`dataprep dedupe`: parse options, call dataprep.dedupe.dedupe (or .sweep), print a summary."""

from __future__ import annotations

import click

KEEP = ("first", "longest", "shortest", "random", "centroid")


@click.command(
    "dedupe",
    epilog="Example: dataprep dedupe out/alpaca -o out/alpaca-dedup --keep longest",
)
@click.argument("input_path", metavar="INPUT", type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="Output directory (required unless --sweep).")
@click.option("--methods", default=None,
              help="Comma list, run in this order, each on what the previous kept [default: exact,near,semantic; "
                   "semantic is then skipped, with a warning, when --model does not read most texts].")
@click.option("--on", "on", default=None, help="Comma list of fields to compare (default: the record kind's text).")
@click.option("--keep", type=click.Choice(KEEP), default="first", show_default=True, help="Which row of a group to keep.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --keep random and --clusters.")
@click.option("--near-threshold", type=float, default=0.8, show_default=True, help="Jaccard threshold for near.")
@click.option("--ngram", type=int, default=5, show_default=True, help="n-gram size for near.")
@click.option("--ngram-unit", type=click.Choice(("char", "word")), default="char", show_default=True)
@click.option("--num-perm", type=int, default=128, show_default=True, help="MinHash permutations.")
@click.option("--threshold", type=float, default=None,
              help="Cosine threshold for semantic [default: 0.85, chosen on STS-B; see README].")
@click.option("--model", default="minilm", show_default=True, help="Sentence-transformers model: name, path or Hub id.")
@click.option("--device", default="auto", show_default=True, help="auto, cuda, mps or cpu.")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Embedding batch size.")
@click.option("--clusters", type=int, default=None, help="Approximate semantic search: k-means with K clusters first.")
@click.option("--allow-model-language-mismatch", is_flag=True,
              help="Run semantic even when most texts are in scripts --model does not read (refused otherwise).")
@click.option("--sweep", default=None, help="START:STOP:STEP: print rows removed per semantic threshold; write only a plot.")
@click.option("--sweep-plot", type=click.Path(), default=None, help="Where --sweep writes its PNG [default: OUT.sweep.png or dedupe_sweep.png].")
@click.option("--no-cache", is_flag=True, help="Do not read or write the embedding cache.")
@click.option("--force", is_flag=True, help="Redo the work even if OUT is up to date.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars.")
def command(input_path, out, methods, on, sweep, sweep_plot, no_cache, force, progress, **options):
    """Remove exact, near (MinHash) and semantic (embedding) duplicates, and report them.

    Writes OUT/records.parquet (kept rows), removed.parquet (each removed row with kept_id,
    method, score), pairs.parquet, report.json, report.html and manifest.json.
    """
    from dataprep import dedupe as dd

    if methods is not None:  # not given: the default methods (see dataprep.dedupe.dedupe)
        options["methods"] = tuple(m.strip() for m in methods.split(",") if m.strip())
    options["on"] = tuple(f.strip() for f in on.split(",") if f.strip()) if on else None
    if options["threshold"] is None:
        options["threshold"] = dd.DEFAULT_THRESHOLD
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
    click.echo(f"wrote {out}/records.parquet, removed.parquet, pairs.parquet, report.html")
