"""What dedupe writes: kept/removed/pairs parquet files, report.json, a self-contained report.html.

The HTML report is one file (CSS inline, plots as base64 PNG) that shows the largest groups
with their texts side by side and the score of each removed row against the kept one, the
borderline pairs just above and just below each threshold, and similarity histograms.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from dataprep.io import atomic_file

MAX_GROUPS = 20  # groups shown in the HTML report
MAX_MEMBERS = 12  # rows shown per group
MAX_CHARS = 700  # characters of each text shown before "…"


def _extra_names(columns: list[str]) -> dict[str, str]:
    """Our added column names; prefixed with `dedupe_` where the input already uses the name."""
    from dataprep.dedupe.methods import EXTRA_COLUMNS

    return {c: (f"dedupe_{c}" if c in columns else c) for c in EXTRA_COLUMNS}


def removed_frame(frame, results):
    import polars as pl

    names = _extra_names(frame.columns)
    ids = np.concatenate([r.removed for r in results]) if results else np.empty(0, np.int64)
    extra = pl.DataFrame(
        {
            names["id"]: ids.astype(np.int64),
            names["kept_id"]: np.concatenate([r.kept_id for r in results]).astype(np.int64) if results else ids,
            names["method"]: [r.method for r in results for _ in r.removed],
            names["score"]: np.concatenate([r.score for r in results]).astype(np.float32) if results else ids.astype(np.float32),
        },
        schema={names["id"]: pl.Int64, names["kept_id"]: pl.Int64, names["method"]: pl.String, names["score"]: pl.Float32},
    )
    rows = frame[ids.tolist()] if len(ids) else frame.clear()
    return pl.concat([rows, extra], how="horizontal").sort(names["id"])


def pairs_frame(results):
    import polars as pl

    cols = {"id_a": [], "id_b": [], "score": [], "method": []}
    for r in results:
        cols["id_a"].append(r.pairs[0])
        cols["id_b"].append(r.pairs[1])
        cols["score"].append(r.pairs[2])
        cols["method"] += [r.method] * len(r.pairs[0])

    def cat(xs, dt):
        return np.concatenate(xs).astype(dt) if xs else np.empty(0, dt)

    return pl.DataFrame(
        {"id_a": cat(cols["id_a"], np.int64), "id_b": cat(cols["id_b"], np.int64),
         "score": cat(cols["score"], np.float32), "method": cols["method"]},
        schema={"id_a": pl.Int64, "id_b": pl.Int64, "score": pl.Float32, "method": pl.String},
    )


def _histogram(sizes: np.ndarray) -> dict[str, int]:
    return {str(k): v for k, v in sorted(Counter(sizes.tolist()).items())}


def build_report(n_in: int, texts, results, embed_stats, cfg, fields, timer, warnings) -> dict[str, Any]:
    methods = {}
    for r in results:
        threshold = {"exact": 1.0, "near": cfg.near_threshold, "semantic": cfg.threshold}[r.method]
        methods[r.method] = {
            "removed": int(len(r.removed)),
            "pairs": int(len(r.pairs[0])),
            "groups": int(len(r.group_sizes)),
            "threshold": threshold,
            "group_size_histogram": _histogram(r.group_sizes),
            **{k: v for k, v in r.stats.items() if k not in ("pairs",)},
        }
    n_removed = sum(m["removed"] for m in methods.values())
    return {
        "rows_in": n_in,
        "kept": n_in - n_removed,
        "removed": n_removed,
        "on": list(fields),
        "keep": cfg.keep,
        "methods": methods,
        "embedding": {k: v for k, v in embed_stats.items() if k not in ("language", "warnings", "semantic_skipped")},
        "language": embed_stats.get("language"),  # the texts' scripts against the model's languages (semantic only)
        "timings": timer.seconds,
        "warnings": warnings,
    }


def collect_warnings(texts, results, embed_stats) -> list[str]:
    out = list(embed_stats.get("warnings", []))  # the model's languages, the separation of the embeddings
    n_empty = sum(1 for t in texts if not t.strip())
    if n_empty:
        out.append(f"{n_empty} empty or whitespace-only texts: they are exact duplicates of each other (one is kept)")
    if embed_stats.get("cache_error"):
        out.append(f"embedding cache not written ({embed_stats['cache_error']}): the vectors were used, and will be "
                   "computed again next time")
    if embed_stats.get("truncated"):
        out.append(
            f"{embed_stats['truncated']} texts are longer than the model's {embed_stats['max_tokens']}-token window: "
            "embedded truncated (the rest of the text is not compared semantically)"
        )
    for r in results:
        if r.method == "near" and r.stats.get("no_shingles"):
            out.append(f"near: {r.stats['no_shingles']} empty texts have no n-grams and are never near duplicates")
        if r.method == "semantic" and "recall" in r.stats:
            out.append(
                f"semantic --clusters {r.stats['clusters']}: recall against exact search {r.stats['recall']:.3f} "
                f"on {r.stats['recall_sample_pairs']} pairs of {r.stats['recall_sample_rows']} sampled rows"
            )
    return out


# ---------------------------------------------------------------- HTML


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def similarity_plot(results, nearest, cfg) -> str | None:
    """Histograms: each row's nearest-neighbour cosine (semantic) and the Jaccard of near pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    if nearest is not None and np.isfinite(nearest).any():
        panels.append(("nearest-neighbour cosine per row (semantic)", nearest[np.isfinite(nearest)], cfg.threshold))
    for r in results:
        if r.method == "near" and len(r.pairs[2]):
            panels.append(("Jaccard of near-duplicate pairs", r.pairs[2], cfg.near_threshold))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.2), squeeze=False)
    for ax, (title, values, threshold) in zip(axes[0], panels, strict=False):
        ax.hist(values, bins=50, color="#4c72b0")
        ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"threshold {threshold}")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("rows" if "row" in title else "pairs")
        ax.legend(fontsize=8)
    return _png(fig)


def sweep_plot(rows: list[dict[str, Any]], n: int, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["threshold"] for r in rows], [r["removed"] for r in rows], marker="o")
    ax.set_xlabel("semantic threshold (cosine)")
    ax.set_ylabel(f"rows removed (of {n})")
    ax.grid(alpha=0.3)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _clip(text: str) -> str:
    shown = text if len(text) <= MAX_CHARS else text[:MAX_CHARS] + " …"
    return html.escape(shown) if shown else "<em>(empty)</em>"


def _groups_html(texts, results) -> str:
    """The largest groups, each kept row beside its removed rows with their scores."""
    groups = []
    for r in results:
        members: dict[int, list[tuple[int, float]]] = {}
        for rid, kid, s in zip(r.removed.tolist(), r.kept_id.tolist(), r.score.tolist(), strict=False):
            members.setdefault(kid, []).append((rid, s))
        groups += [(r.method, kid, rows) for kid, rows in members.items()]
    groups.sort(key=lambda g: (-len(g[2]), g[1]))
    if not groups:
        return "<p>No duplicates found.</p>"
    parts = []
    for method, kid, rows in groups[:MAX_GROUPS]:
        cells = "".join(
            f'<div class="removed"><div class="meta">removed #{rid} · score {s:.3f}</div>{_clip(texts[rid])}</div>'
            for rid, s in rows[:MAX_MEMBERS]
        )
        more = f'<p class="meta">… and {len(rows) - MAX_MEMBERS} more</p>' if len(rows) > MAX_MEMBERS else ""
        parts.append(
            f'<section class="group" data-method="{method}"><h3>{method} · {len(rows) + 1} rows · kept #{kid}</h3>'
            f'<div class="row"><div class="kept"><div class="meta">kept #{kid}</div>{_clip(texts[kid])}</div>'
            f'<div class="others">{cells}{more}</div></div></section>'
        )
    return f"<p>{len(groups)} groups in all; the {min(len(groups), MAX_GROUPS)} largest:</p>" + "".join(parts)


def _pairs_table(texts, a, b, s, label) -> str:
    if not len(a):
        return f"<p class='meta'>No pairs {label}.</p>"
    rows = "".join(
        f"<tr><td>{score:.3f}</td><td>#{i}<br>{_clip(texts[i])}</td><td>#{j}<br>{_clip(texts[j])}</td></tr>"
        for i, j, score in zip(a.tolist(), b.tolist(), s.tolist(), strict=False)
    )
    return f"<table class='pairs'><tr><th>score</th><th>row</th><th>row</th></tr>{rows}</table>"


def _borderline_html(texts, results, cfg, k: int = 10) -> str:
    parts = []
    for r in results:
        if r.method == "exact":
            continue
        threshold = cfg.threshold if r.method == "semantic" else cfg.near_threshold
        a, b, s = r.pairs
        low = np.argsort(s, kind="stable")[:k]
        ba, bb, bs = r.below
        parts.append(
            f"<h3>{r.method}: just above the threshold {threshold} (removed)</h3>"
            + _pairs_table(texts, a[low], b[low], s[low], "above the threshold")
            + f"<h3>{r.method}: just below the threshold {threshold} (kept)</h3>"
            + _pairs_table(texts, ba[:k], bb[:k], bs[:k], "just below the threshold")
        )
    return "".join(parts) or "<p class='meta'>Only exact dedupe ran: there is no threshold to choose.</p>"


CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1300px}
h1{font-size:22px} h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
h3{font-size:14px;margin:16px 0 6px}
.meta{color:#666;font-size:12px;margin-bottom:4px}
.group{border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:12px 0}
.row{display:flex;gap:12px}.kept{flex:1;background:#eef6ee;padding:8px;border-radius:4px;white-space:pre-wrap}
.others{flex:1;display:flex;flex-direction:column;gap:6px}
.removed{background:#fbeeee;padding:8px;border-radius:4px;white-space:pre-wrap}
table{border-collapse:collapse;font-size:13px}.pairs{width:100%}.pairs td:not(:first-child){width:48%}td,th{border:1px solid #ddd;padding:6px;vertical-align:top;white-space:pre-wrap}
.warn{background:#fff7e0;padding:6px 10px;border-radius:4px}
"""


def _sizes(histogram: dict[str, int]) -> str:
    """`{"2": 5, "3": 1}` → `5 of 2 rows, 1 of 3 rows`."""
    return ", ".join(f"{count} of {size} rows" for size, count in histogram.items()) or "none"


def render_html(report: dict[str, Any], texts, results, nearest, cfg) -> str:
    summary = "".join(
        f"<tr><td>{m}</td><td>{v['threshold']}</td><td>{v['pairs']}</td><td>{v['groups']}</td><td>{v['removed']}</td>"
        f"<td>{_sizes(v['group_size_histogram'])}</td></tr>"
        for m, v in report["methods"].items()
    )
    warnings = "".join(f"<p class='warn'>{html.escape(w)}</p>" for w in report["warnings"])
    plot = similarity_plot(results, nearest, cfg)
    timings = ", ".join(f"{k} {v:.2f} s" for k, v in report["timings"].items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>dataprep dedupe report</title>
<style>{CSS}</style></head><body>
<h1>dataprep dedupe</h1>
<p id="counts">in {report['rows_in']} = kept {report['kept']} + removed {report['removed']} ·
text: {html.escape(' + '.join(report['on']))} · keep: {report['keep']}</p>
{warnings}
<table><tr><th>method</th><th>threshold</th><th>pairs</th><th>groups</th><th>removed</th><th>group sizes</th></tr>
{summary}</table>
<p class="meta">timings: {html.escape(timings)}</p>
<h2>Largest groups</h2>
{_groups_html(texts, results)}
<h2>Borderline pairs</h2>
{_borderline_html(texts, results, cfg)}
<h2>Similarity</h2>
{f'<img alt="similarity histogram" src="{plot}">' if plot else "<p class='meta'>No similarities to plot.</p>"}
</body></html>
"""
