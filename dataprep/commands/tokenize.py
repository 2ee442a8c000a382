"""`dataprep tokenize RECORDS -o OUT`: canonical records → Arrow token shards with exact masks."""

from __future__ import annotations

import click

EXAMPLE = "Example: dataprep tokenize out/alpaca -o out/alpaca-tok --pack"


@click.command(epilog=EXAMPLE)
@click.argument("records", type=click.Path(exists=True))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--tokenizer", default="smollm2-135m", show_default=True,
              help="smollm2-135m, minilm, a local tokenizer/model directory, or a Hub id.")
@click.option("--max-len", default=2048, show_default=True, type=int, help="Maximum tokens per row (and per bin).")
@click.option("--overflow", type=click.Choice(["truncate-prompt", "truncate", "drop", "error"]),
              default="truncate-prompt", show_default=True,
              help="Rows over --max-len: cut the prompt from the left keeping the completion whole (a completion "
              "too long alone keeps the prompt's last max-len/2 tokens and loses its end), cut the end, drop the row "
              "(a reject), or stop with an error.")
@click.option("--train-on", type=click.Choice(["all-assistant", "last-assistant"]), default="all-assistant",
              show_default=True, help="chat: which assistant turns get labels.")
@click.option("--train-on-inputs", is_flag=True, help="Train on every token, prompt included.")
@click.option("--pack", is_flag=True, help="Pack sequences into --max-len bins (best-fit-decreasing).")
@click.option("--num-shards", type=int, help="Number of Arrow shards to write.")
@click.option("--shard-size", help="Maximum shard size instead, e.g. 500MB.")
@click.option("--num-proc", default=1, show_default=True, type=int,
              help="Worker processes (the fast tokenizer already uses all cores for a batch).")
@click.option("--batch-size", default=1000, show_default=True, type=int, help="Records per batch (bounds memory).")
@click.option("--force", is_flag=True, help="Redo the work even if OUT is up to date.")
def command(records, out, tokenizer, max_len, overflow, train_on, train_on_inputs, pack, num_shards, shard_size,
            num_proc, batch_size, force):
    """Tokenize the output of `dataprep convert` or `dataprep dedupe` (or a records .parquet/.jsonl file).

    Labels are -100 for every token that starts before the completion's first character (chat: outside the
    assistant turns), found by character offsets of ONE tokenization. EOS is appended and trained on; the pad
    id is never EOS. Writes a `datasets.load_from_disk` directory, manifest.json and rejects.jsonl."""
    from dataprep.tokenize import tokenize

    m = tokenize(records, out, tokenizer=tokenizer, max_len=max_len, overflow=overflow, train_on=train_on,
                 train_on_inputs=train_on_inputs, pack=pack, num_shards=num_shards, shard_size=shard_size,
                 num_proc=num_proc, batch_size=batch_size, force=force)
    if m.skipped:
        click.echo(f"{out} is up to date (fingerprint {m.fingerprint}); skipped. Use --force to redo.")
        return
    stats, secs = m.get("token_stats"), sum(m.timings.values())
    click.echo(f"tokenize ({m.lineage.kind}): {m.counts.line()} in {secs:.1f}s")
    if stats.get("total"):
        ln = stats["length"]
        click.echo(f"tokens: {stats['total']:,} total, {stats['trainable']:,} trained; "
                   f"length p50 {ln['p50']}, p95 {ln['p95']}, p99 {ln['p99']}, max {ln['max']}")
    if m.get("events"):
        click.echo("overflow: " + ", ".join(f"{k} {v}" for k, v in sorted(m.get("events").items())))
    if m.get("packing"):
        p = m.get("packing")
        click.echo(f"packed {p['sequences']:,} sequences into {p['bins']:,} bin(s) of {p['capacity']} "
                   f"(lower bound {p['lower_bound_bins']:,}, {p['algorithm']}): efficiency {p['efficiency']:.2%}")
    pad = m.get("pad_policy")
    click.echo(f"pad id {pad['pad_token_id']} ({pad['pad_token']}, {pad['source']}), eos id {m.lineage.tokenizer.eos_token_id}")
    click.echo(f"wrote {out}: {len(m.get('shards'))} shard(s), manifest.json, rejects.jsonl")
