"""Look at token shards: length statistics with a histogram, and rows with their mask made visible.

Used by `dataprep stats` and `dataprep inspect`. Reads any `dataprep tokenize` output (packed
or not); the tokenizer comes from the output's manifest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dataprep import io
from dataprep.errors import DataprepError
from dataprep.records import IGNORE_INDEX
from dataprep.stage import Manifest, read_manifest

FIT_LENGTHS = (256, 512, 1024, 2048, 4096, 8192)


def open_tokenize_output(path: str | os.PathLike):
    """(datasets.Dataset, manifest) of a tokenize output directory, to look at (`stats`, `inspect`);
    training reads its shards with `training.data.load_shards`, which also checks their columns."""
    from datasets import load_from_disk

    manifest = read_manifest(path)
    if not manifest or manifest.stage != "tokenize":
        raise DataprepError(f"{path} is not a `dataprep tokenize` output (no tokenize manifest.json); run tokenize first")
    return load_from_disk(str(path)), manifest


def sequence_lengths(ds, packed: bool) -> np.ndarray:
    """Lengths of the sequences (inside packed rows too)."""
    import pyarrow.compute as pc

    table = ds.data.table
    if packed:
        return pc.list_flatten(table.column("seq_lengths")).to_numpy().astype(np.int64)
    return table.column("length").to_numpy().astype(np.int64)


def length_stats(path: str | os.PathLike) -> dict[str, Any]:
    """Rows, sequences, tokens, trained tokens, length percentiles and the share of sequences each
    common --max-len keeps whole."""
    ds, manifest = open_tokenize_output(path)
    lengths = sequence_lengths(ds, bool(manifest.lineage.packed))
    stats = manifest.get("token_stats", {})
    if not len(lengths):
        raise DataprepError(f"{path} holds no rows")
    pct = {f"p{q}": int(np.percentile(lengths, q, method="higher")) for q in (50, 90, 95, 99)}
    return {
        "rows": len(ds),
        "sequences": int(len(lengths)),
        "tokens": int(lengths.sum()),
        "trainable": int(stats.get("trainable", 0)),
        "length": {"min": int(lengths.min()), **pct, "max": int(lengths.max()), "mean": round(float(lengths.mean()), 1)},
        "fits": {str(n): float((lengths <= n).mean()) for n in FIT_LENGTHS},
        "packing_efficiency": (manifest.get("packing") or {}).get("efficiency"),
        "lengths": lengths,
    }


def plot_lengths(lengths: np.ndarray, png: str | os.PathLike, title: str = "") -> Path:
    """A histogram of sequence lengths with p50/p95/p99 marked, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.hist(lengths, bins=min(80, max(10, len(np.unique(lengths)))), color="#4c72b0")
    for q, style in ((50, "-"), (95, "--"), (99, ":")):
        v = np.percentile(lengths, q, method="higher")
        ax.axvline(v, color="#c44e52", linestyle=style, label=f"p{q} = {int(v)}")
    ax.set(xlabel="tokens per sequence", ylabel="sequences", title=f"sequence lengths {title}".strip())
    ax.legend()
    fig.tight_layout()
    with io.atomic_file(png) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(png)


def _load_tokenizer(manifest: Manifest):
    from transformers import AutoTokenizer

    info = manifest.lineage.tokenizer
    if info.path and Path(info.path).exists():
        return AutoTokenizer.from_pretrained(info.path)
    from dataprep.models import load_tokenizer

    return load_tokenizer(info.name)


def mark_trained(tok, ids: list[int], labels: list[int], color: bool) -> str:
    """The decoded ids, with each run of trained tokens in green (color) or between [[ and ]].

    Runs are decoded together, so multi-byte characters split over tokens decode whole.
    """
    import click

    def mark(text: str) -> str:
        return click.style(text, fg="green", bold=True) if color else f"[[{text}]]"

    return "".join(mark(text) if trained else text for text, trained in _runs(tok, ids, labels))


def _runs(tok, ids: list[int], labels: list[int]) -> list[tuple[str, bool]]:
    """(decoded text, trained?) for each run of consecutive tokens with the same mask."""
    out, start = [], 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or (labels[i] != IGNORE_INDEX) != (labels[start] != IGNORE_INDEX):
            out.append((tok.decode(ids[start:i], skip_special_tokens=False), labels[start] != IGNORE_INDEX))
            start = i
    return out


HTML_HEAD = """<!doctype html><meta charset="utf-8"><title>{title}</title>
<style>body{{font:14px system-ui;margin:2em}} pre{{white-space:pre-wrap;background:#f7f7f7;padding:.6em;
border-radius:4px}} .t{{background:#c8f7c5;outline:1px solid #7bc47f}} h2{{font-size:15px;margin-top:2em}}
.seq{{color:#666;font-size:12px}}</style>
<h1>{title}</h1><p>Trained tokens (label &ne; -100) are <span class="t">green</span>; the rest is context only.</p>
"""


def check_rows(ds, rows: list[int], path) -> None:
    bad = [n for n in rows if not 0 <= n < len(ds)]
    if bad:
        raise DataprepError(f"--row {bad[0]} is out of range; {path} has {len(ds)} rows (0..{len(ds) - 1})")


def write_html(path: str | os.PathLike, html_path: str | os.PathLike, rows: list[int] | None = None,
               first: int = 50) -> Path:
    """A page with `rows` (default: the first `first`) decoded and their trained tokens
    highlighted, to browse masks. Rows out of range are an error, never an empty page."""
    import html

    ds, manifest = open_tokenize_output(path)
    if manifest.lineage.kind in ("classify", "preference"):
        raise DataprepError(f"--html shows sft/chat/text masks; {path} holds {manifest.lineage.kind} rows (use --row)")
    rows = list(range(min(first, len(ds)))) if rows is None else rows
    check_rows(ds, rows, path)
    tok = _load_tokenizer(manifest)
    parts = [HTML_HEAD.format(title=html.escape(f"dataprep inspect {path}"))]
    for n in rows:
        row = ds[n]
        trained = sum(x != IGNORE_INDEX for x in row["labels"])
        parts.append(f"<h2>row {n}: {row['length']} tokens, {trained} trained</h2>")
        seq_lens, start = row.get("seq_lengths") or [len(row["input_ids"])], 0
        for j, m in enumerate(seq_lens):
            if len(seq_lens) > 1:
                parts.append(f'<div class="seq">sequence {j + 1}/{len(seq_lens)}, {m} tokens</div>')
            runs = _runs(tok, row["input_ids"][start : start + m], row["labels"][start : start + m])
            body = "".join(f'<span class="t">{html.escape(t)}</span>' if on else html.escape(t) for t, on in runs)
            parts.append(f"<pre>{body}</pre>")
            start += m
    with io.atomic_file(html_path) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return Path(html_path)


def token_table(tok, ids: list[int], labels: list) -> str:
    return "\n".join(f"{i:5d} {t:7d} {'T' if lab != IGNORE_INDEX else '.'} {tok.decode([t])!r}"
                     for i, (t, lab) in enumerate(zip(ids, labels, strict=True)))


def render_rows(path: str | os.PathLike, rows: list[int], color: bool = False, tokens: bool = False) -> list[str]:
    """Rows of a tokenize output, decoded, with trained tokens marked; packed rows per sequence.
    The shards and tokenizer load once; every row number is checked before any is rendered."""
    ds, manifest = open_tokenize_output(path)
    check_rows(ds, rows, path)
    tok = _load_tokenizer(manifest)
    return [_render(tok, ds[n], n, manifest, color, tokens) for n in rows]


def render_row(path: str | os.PathLike, n: int, color: bool = False, tokens: bool = False) -> str:
    return render_rows(path, [n], color, tokens)[0]


def _render(tok, row: dict[str, Any], n: int, manifest: Manifest, color: bool, tokens: bool) -> str:
    kind = manifest.lineage.kind
    if kind == "classify":
        names = list(manifest.lineage.label_names or [])
        hot = [names[j] if j < len(names) else str(j) for j in row["label_ids"]]
        return f"row {n} ({row['length']} tokens) labels: {', '.join(hot) or '(none)'}\n{tok.decode(row['input_ids'])}"
    if kind == "preference":
        parts = [f"row {n} (preference)"]
        for side in ("chosen", "rejected"):
            parts.append(f"--- {side}:\n" + mark_trained(tok, row[f"{side}_input_ids"], row[f"{side}_labels"], color))
        return "\n".join(parts)
    ids, labels = row["input_ids"], row["labels"]
    trained = sum(lab != IGNORE_INDEX for lab in labels)
    legend = "trained tokens in green" if color else "trained tokens between [[ ]]"
    parts = [f"row {n}: {len(ids)} tokens, {trained} trained ({legend})"]
    seq_lens = row.get("seq_lengths") or [len(ids)]
    start = 0
    for j, m in enumerate(seq_lens):
        if len(seq_lens) > 1:
            parts.append(f"--- sequence {j + 1}/{len(seq_lens)} ({m} tokens, positions 0..{m - 1})")
        parts.append(mark_trained(tok, ids[start : start + m], labels[start : start + m], color))
        if tokens:
            parts.append(token_table(tok, ids[start : start + m], labels[start : start + m]))
        start += m
    return "\n".join(parts)


def fidelity_report(path: str | os.PathLike, first: int = 20) -> str:
    """The fidelity check of a tokenize output: turns checked, mismatches by reason (with what each
    means), and the first `first` rows rejected (rejects.jsonl) or kept (fidelity_kept.jsonl) with a mismatch."""
    import json

    from dataprep.stage import REJECTS
    from dataprep.tokenize.fidelity import KEPT_FILE, REASONS

    manifest = read_manifest(path)
    if not manifest or manifest.stage != "tokenize":
        raise DataprepError(f"{path} is not a `dataprep tokenize` output (no tokenize manifest.json); run tokenize first")
    fid = manifest.get("fidelity")
    if fid is None:
        return f"{path}: no fidelity check was run for {manifest.lineage.kind} rows"
    policy = manifest.config.get("on_mismatch", "reject")
    lines = [f"fidelity: {fid['checked']} turn(s) checked, {fid['mismatched']} mismatched (--on-mismatch {policy})"]
    for reason, n in fid["by_reason"].items():
        lines.append(f"  {reason}: {n}  ({REASONS.get(reason, '')})")
    rejects = Path(path) / REJECTS
    rows = []
    if rejects.is_file():
        with open(rejects, encoding="utf-8") as fh:
            rows = [r for r in map(json.loads, fh) if str(r.get("reason", "")).startswith("fidelity: ")]
    if rows:
        lines.append(f"rejected rows ({len(rows)}; first {min(first, len(rows))}):")
        lines += [f"  {r['source']} row {r['row']}: {r['reason'][len('fidelity: '):]}: {r.get('detail') or ''}"
                  for r in rows[:first]]
    kept_file = Path(path) / KEPT_FILE
    if kept_file.is_file():  # --on-mismatch warn
        with open(kept_file, encoding="utf-8") as fh:
            kept = [json.loads(line) for line in fh]
        lines.append(f"rows kept with a mismatch ({len(kept)}; first {min(first, len(kept))}; by source file and "
                     "source row, as in rejects.jsonl, not the output row index that `inspect --row` takes):")
        lines += [f"  {r['source']} row {r['row']}: {', '.join(r['reasons'])}: {r['detail']}" for r in kept[:first]]
    return "\n".join(lines)
