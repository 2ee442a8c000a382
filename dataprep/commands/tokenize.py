"""`dataprep tokenize RECORDS -o OUT`: canonical records → Arrow token shards with exact masks."""

from __future__ import annotations

import click

from dataprep.options import click_options
from dataprep.tokenize.rows import TokenizeOptions

EXAMPLE = "Example: dataprep tokenize out/alpaca -o out/alpaca-tok --pack"


@click.command(epilog=EXAMPLE)
@click.argument("records", type=click.Path(exists=True))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click_options(TokenizeOptions)
@click.option("--force", is_flag=True, help="Redo the work even if OUT is up to date.")
def command(records, out, force, **options):
    """Tokenize the output of `dataprep convert` or `dataprep dedupe` (or a records .parquet/.jsonl file).

    sft: the prompt is tokenized alone, as at inference, and the completion from a token boundary (--seam
    inference); its tokens are -100. Chat: tokens outside the assistant turns are -100, found by character
    offsets of the one rendering. EOS is appended and trained on; the pad
    id is never EOS. Preference pairs share one prompt, cut the same way on both sides; text rows over
    --max-len become windows (--overflow split, --stride). Writes a `datasets.load_from_disk` directory,
    manifest.json and rejects.jsonl."""
    from dataprep.tokenize import tokenize

    m = tokenize(records, out, force=force, **options)
    if m.skipped:
        click.echo(f"{out} is up to date (fingerprint {m.fingerprint}); skipped. Use --force to redo.")
        return
    stats, secs = m.get("token_stats"), sum(m.timings.values())
    click.echo(f"tokenize ({m.lineage.kind}): {m.counts.line()} in {secs:.1f}s")
    if stats.get("total"):
        ln = stats["length"]
        click.echo(f"tokens: {stats['total']:,} total, {stats['trainable']:,} trained; "
                   f"length p50 {ln['p50']}, p95 {ln['p95']}, p99 {ln['p99']}, max {ln['max']}")
    events = dict(m.get("events") or {})
    split, extra = events.pop("split_into_windows", 0), events.pop("windows", 0)
    if split:
        click.echo(f"windows: {split:,} row(s) over --max-len split into {split + extra:,} windows "
                   f"({extra:,} extra rows, stride {m.config.get('stride', 0)}); no token lost")
    if events:
        click.echo("overflow (rows cut, by what was cut): " + ", ".join(f"{k} {v}" for k, v in sorted(events.items())))
    fid = m.get("fidelity")
    if fid:
        fate = "rejected" if m.config.get("on_mismatch") == "reject" else "kept (--on-mismatch warn)"
        seam = f" (--seam {m.config['seam']})" if m.config.get("seam") else ""
        reasons = ", ".join(f"{k} {v}" for k, v in fid["by_reason"].items())
        click.echo(f"fidelity{seam}: {fid['checked']:,} checked, {fid['mismatched']:,} mismatched"
                   + (f" ({reasons}; {fate}; see `dataprep inspect {out} --fidelity`)" if reasons else ""))
    chat = m.get("chat") or {}
    if chat.get("split_turns"):
        click.echo(f"--split-turns: {chat['split_turns']:,} extra sequence(s), {chat['split_turn_tokens']:,} extra tokens")
    if chat.get("tools_in_system"):
        click.echo(f"--tools-in-system: {chat['tools_in_system']:,} row(s) had their tools rendered as text")
    if chat.get("rows_with_media"):
        click.echo(f"media: {chat['rows_with_media']:,} row(s) reference media (shard column `media`)")
    if m.get("packing"):
        p = m.get("packing")
        click.echo(f"packed {p['sequences']:,} sequences into {p['bins']:,} bin(s) of {p['capacity']} "
                   f"(lower bound {p['lower_bound_bins']:,}, {p['algorithm']}): efficiency {p['efficiency']:.2%}")
    pad = m.get("pad_policy")
    click.echo(f"pad id {pad['pad_token_id']} ({pad['pad_token']}, {pad['source']}), eos id {m.lineage.tokenizer.eos_token_id}")
    click.echo(f"wrote {out}: {len(m.get('shards'))} shard(s), manifest.json, rejects.jsonl")
