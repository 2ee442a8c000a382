"""`dataprep tokenizer-train RECORDS -o OUT`: retrain a tokenizer's vocabulary on records."""

from __future__ import annotations

import sys

import click

from dataprep.options import click_options
from dataprep.tokenizer_train import TokenizerTrainOptions

EXAMPLE = "Example: dataprep tokenizer-train out/ko -o out/ko-tok --vocab-size 8000"


@click.command("tokenizer-train", epilog=EXAMPLE)
@click.argument("records", type=click.Path(exists=True))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Output tokenizer directory.")
@click_options(TokenizerTrainOptions)
@click.option("--force", is_flag=True, help="Retrain even if OUT is up to date.")
def command(records, out, force, **options) -> None:
    """Retrain the --base tokenizer on RECORDS (the output of `dataprep convert`, `dedupe` or `filter`, or a records
    file) to --vocab-size with `train_new_from_iterator`, and save it to OUT with manifest.json. The text is each
    record's text fields (as dedupe compares them); --held-out of the rows (seeded) are not trained on and measure
    tokens per character before and after. OUT works as `dataprep tokenize --tokenizer OUT`."""
    from dataprep.tokenizer_train import tokenizer_train

    m = tokenizer_train(records, out, force=force, progress=sys.stderr.isatty(), **options)
    if m.skipped:
        click.echo(f"{out} is up to date (fingerprint {m.fingerprint}); skipped. Use --force to redo.")
        return
    tpc, vocab, rows = m.get("tokens_per_char"), m.get("vocab_size"), m.get("rows")
    click.echo(f"tokenizer-train: {m.counts.line()}; trained on {rows['train']:,} rows, {rows['held_out']:,} held out")
    click.echo(f"tokens/char on held-out rows: before {tpc['before']:.4f} ({m.get('base')}, vocab {vocab['base']:,}) "
               f"-> after {tpc['after']:.4f} (vocab {vocab['new']:,}): x{tpc['ratio']:.3f}")
    click.echo(f"wrote {out}: tokenizer files, manifest.json, rejects.jsonl")
