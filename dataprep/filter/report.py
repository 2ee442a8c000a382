"""What filter reports: report.json (counts by filter and reason, per-family figures) and a
self-contained report.html: the counts, and for each filter samples of removed rows by reason
next to the kept rows closest to a threshold."""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from dataprep.filter.fields import field_texts

SAMPLES = 5  # removed rows shown per reason
MAX_CHARS = 500


def build_report(n_in: int, by_reason: dict[str, int], stats: dict[str, Any], cfg, fields, kind) -> dict[str, Any]:
    removed = sum(by_reason.values())
    return {"rows_in": n_in, "kept": n_in - removed, "removed": removed, "dry_run": cfg.dry_run,
            "kind": kind, "fields": list(fields), "by_reason": by_reason,
            "filters": {f: {k: v for k, v in s.items() if k != "near"} for f, s in stats.items()}}


def _row_text(texts, i: int) -> str:
    t = "\n\n".join(f"[{name}] {vals[i]}" for name, vals in texts.items() if vals[i])
    return html.escape(t[:MAX_CHARS] + ("…" if len(t) > MAX_CHARS else ""))


def render_html(report, frame, cols, stats, fields, kind) -> str:
    filt, reason, score, detail = cols
    texts = {f: field_texts(frame, kind, f) for f in fields}
    verb = "would remove" if report["dry_run"] else "removed"
    parts = [
        "<!doctype html><meta charset='utf-8'><title>dataprep filter report</title>",
        "<style>body{font:14px sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px;vertical-align:top}"
        "table{border-collapse:collapse}pre{white-space:pre-wrap;margin:0;max-width:70em}</style>",
        f"<h1>filter: in {report['rows_in']}, kept {report['kept']}, {verb} {report['removed']}</h1>",
        "<table><tr><th>filter: reason</th><th>rows</th></tr>",
        *(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in report["by_reason"].items()),
        "</table>",
    ]
    for family, s in stats.items():
        parts.append(f"<h2>{family}: {verb} {s['removed']} of {s['seen']}</h2>")
        ids = np.flatnonzero(filt == family)
        for r in dict.fromkeys(reason[ids].tolist()):
            sample = [i for i in ids if reason[i] == r][:SAMPLES]
            parts.append(f"<h3>{html.escape(str(r))}</h3><table><tr><th>row</th><th>score</th><th>detail</th>"
                         "<th>text</th></tr>")
            parts += [f"<tr><td>{i}</td><td>{score[i]:.3g}</td><td>{html.escape(str(detail[i] or ''))}</td>"
                      f"<td><pre>{_row_text(texts, i)}</pre></td></tr>" for i in sample]
            parts.append("</table>")
        if s["near"]:
            parts.append("<h3>kept, just inside a threshold</h3><table><tr><th>row</th><th>value</th><th>rule</th>"
                         "<th>margin</th><th>text</th></tr>")
            parts += [f"<tr><td>{m['id']}</td><td>{m['score']:.3g}</td><td>{html.escape(str(m['detail'] or ''))}</td>"
                      f"<td>{m['margin']:.3g}</td><td><pre>{_row_text(texts, m['id'])}</pre></td></tr>"
                      for m in s["near"]]
            parts.append("</table>")
    return "\n".join(parts)
