"""The filter stage: read records, run the enabled filter families in a fixed order (length,
language, pii, quality), each on the rows the earlier ones kept, so a row's `filter` is the first
family it fails; write kept rows, removed rows with their filter, reason and score, and the report.

`--dry-run` runs the same filters but removes nothing: every row is written with the annotation
columns `filter`, `filter_reason`, `filter_score` (null where it passed); the manifest counts all
rows as out and the report says what would go. PII redaction changes the kept rows' texts (not
in a dry run); `--pii flag` adds a `pii` column (the types found).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from dataprep.errors import DataprepError
from dataprep.filter import report as reports
from dataprep.filter.config import ENABLING, FilterConfig
from dataprep.filter.fields import DEFAULT_FIELDS, FilterResult, check_fields, parse_spec
from dataprep.options import parse_options
from dataprep.stage import Manifest, Outcome, Workspace, run_stage, scan_records

ANNOTATIONS = ("filter", "filter_reason", "filter_score", "filter_detail")
NEAR_SAMPLES = 3  # kept rows closest to a threshold, per family, in the report


def _named_fields(cfg: FilterConfig) -> list[str]:
    names = []
    for b in ("min", "max"):
        for u in ("chars", "words", "tokens", "turns"):
            names += [f for f, _ in parse_spec(getattr(cfg, f"{b}_{u}"), u) if f]
    names += [item.rpartition("=")[0] for item in cfg.lang or () if "=" in item]
    return names


def lang_by_field(cfg: FilterConfig, fields) -> dict[str, tuple[str, ...]]:
    everywhere = tuple(c for item in cfg.lang or () if "=" not in item for c in item.split("+"))
    out = {f: everywhere for f in fields} if everywhere else {}
    for item in cfg.lang or ():
        if "=" in item:
            f, _, codes = item.rpartition("=")
            out[f] = tuple(codes.split("+"))
    return out


def run_family(family: str, sub, kind, cfg: FilterConfig, fields, tokenizer) -> FilterResult:
    if family == "length":
        from dataprep.filter.length import length_bounds, length_filter

        return length_filter(sub, kind, length_bounds(cfg, fields), tokenizer)
    if family == "language":
        from dataprep.filter.language import language_filter

        return language_filter(sub, kind, lang_by_field(cfg, fields), cfg.lang_threshold, cfg.lang_min_chars)
    if family == "pii":
        from dataprep.filter.pii import pii_filter

        return pii_filter(sub, "flag" if cfg.dry_run and cfg.pii == "redact" else cfg.pii, cfg.pii_types)
    from dataprep.filter.quality import quality_filter

    return quality_filter(sub, kind, cfg)


def apply_filters(frame, kind, cfg: FilterConfig, fields, tokenizer=None, timer=None):
    """(frame with redactions applied, per-row filter/reason/score/detail arrays, per-family stats and
    near-threshold samples). Each family sees only the rows the earlier ones kept."""
    import contextlib

    import polars as pl

    n = frame.height
    filt = np.full(n, None, dtype=object)
    reason = np.full(n, None, dtype=object)
    detail = np.full(n, None, dtype=object)
    score = np.full(n, np.nan)
    alive = np.arange(n)
    stats: dict[str, Any] = {}
    pii_flags = None
    for family in cfg.enabled():
        with timer(family) if timer else contextlib.nullcontext():
            sub = frame[alive.tolist()] if len(alive) < n else frame
            res = run_family(family, sub, kind, cfg, fields, tokenizer)
        bad = np.array([r is not None for r in res.reason], dtype=bool)
        ids = alive[bad]
        filt[ids] = family
        reason[ids] = np.array(res.reason, dtype=object)[bad]
        score[ids] = res.score[bad]
        detail[ids] = np.array(res.detail, dtype=object)[bad]
        margin = np.where(bad, np.nan, res.margin)
        order = [int(i) for i in np.argsort(np.where(np.isnan(margin), np.inf, margin)) if np.isfinite(margin[i])]
        near = [{"id": int(alive[i]), "detail": res.detail[i], "score": float(res.score[i]), "margin": float(margin[i])}
                for i in order[:NEAR_SAMPLES]]
        stats[family] = {"removed": int(bad.sum()), "seen": int(len(alive)), "near": near, **res.stats}
        if res.texts:
            for col, values in res.texts.items():
                full = frame.get_column(col).to_list()
                for j, v in zip(alive.tolist(), values, strict=True):
                    full[j] = v
                frame = frame.with_columns(pl.Series(col, full, dtype=frame.schema[col]))
        if res.flags is not None:
            pii_flags = np.full(n, None, dtype=object)
            pii_flags[alive] = np.array(res.flags, dtype=object)
        alive = alive[~bad]
    return frame, (filt, reason, score, detail), stats, pii_flags


def annotated(frame, cols, ids):
    import polars as pl

    filt, reason, score, detail = cols
    sel = frame[ids.tolist()] if len(ids) else frame.clear()
    extra = pl.DataFrame({"filter": filt[ids].tolist(), "filter_reason": reason[ids].tolist(),
                          "filter_score": score[ids].tolist(), "filter_detail": detail[ids].tolist()},
                         schema={"filter": pl.String, "filter_reason": pl.String, "filter_score": pl.Float64,
                                 "filter_detail": pl.String})
    return pl.concat([sel.drop([c for c in ANNOTATIONS if c in sel.columns]), extra], how="horizontal")


def filter(path: str | Path, out: str | Path, *, force: bool = False, allow_empty: bool = False,
           **options: Any) -> Manifest:  # noqa: A001 (the stage is called filter)
    """Filter the records at `path` into the directory `out`; returns the manifest.

    `options` are the fields of FilterConfig. With no family enabled it is a one-line error. The
    manifest counts `in = out + removed` by `FAMILY: reason`; its lineage is the input's.
    """
    cfg = parse_options(FilterConfig, options, "filter")
    if not cfg.enabled():
        raise DataprepError(f"filter: no filter enabled; pass {ENABLING}")
    if (cfg.min_tokens or cfg.max_tokens) and not cfg.tokenizer:
        raise DataprepError("filter: --min-tokens/--max-tokens need --tokenizer (a packaged name, path or Hub id)")
    data, manifest_in, kind, columns = scan_records(path, "filter")
    fields = tuple(cfg.fields or DEFAULT_FIELDS.get(kind or "", ()))
    if not fields:
        raise DataprepError(f"filter: cannot tell the fields of these records (columns: {', '.join(columns)}); "
                            "pass --fields")
    check_fields(kind, columns, [*fields, *_named_fields(cfg)])
    tokenizer = None
    if cfg.tokenizer and (cfg.min_tokens or cfg.max_tokens):
        from dataprep.models import load_tokenizer

        tokenizer = load_tokenizer(cfg.tokenizer)

    def build(ws: Workspace) -> Outcome:
        from dataprep.io import read_records, write_json

        with ws.timer("read"):
            frame = read_records(data)
        n = frame.height
        frame, cols, stats, pii_flags = apply_filters(frame, kind, cfg, fields, tokenizer, ws.timer)
        removed_ids = np.flatnonzero(cols[0] != None)  # noqa: E711 (element-wise)
        kept_ids = np.flatnonzero(cols[0] == None)  # noqa: E711
        by_reason: dict[str, int] = {}
        for f, r in zip(cols[0][removed_ids], cols[1][removed_ids], strict=True):
            by_reason[f"{f}: {r}"] = by_reason.get(f"{f}: {r}", 0) + 1
        by_reason = dict(sorted(by_reason.items(), key=lambda kv: -kv[1]))
        with ws.timer("write"):
            import polars as pl

            if pii_flags is not None:
                frame = frame.with_columns(pl.Series("pii", pii_flags.tolist(), dtype=pl.String))
            removed = annotated(frame, cols, removed_ids)
            removed.write_parquet(ws.out / "removed.parquet")
            if cfg.dry_run:
                annotated(frame, cols, np.arange(n)).write_parquet(ws.out / "records.parquet")
            else:
                (frame[kept_ids.tolist()] if len(kept_ids) else frame.clear()).write_parquet(ws.out / "records.parquet")
            report = reports.build_report(n, by_reason, stats, cfg, fields, kind)
            (ws.out / "report.html").write_text(reports.render_html(report, frame, cols, stats, fields, kind),
                                                encoding="utf-8")
        report["timings"] = dict(ws.timer.seconds)
        write_json(ws.out / "report.json", report)
        details = {"fields": list(fields), "report": "report.json", "dry_run": cfg.dry_run,
                   "filters": list(cfg.enabled())}
        if cfg.dry_run:
            details["would_remove"] = by_reason
            return Outcome(n, n, details, removed={}, lineage={"kind": kind})
        return Outcome(n, int(len(kept_ids)), details, removed=by_reason, lineage={"kind": kind})

    return run_stage("filter", out, inputs=[str(data)], config={**asdict(cfg), "fields": list(fields)}, build=build,
                     data_files=("records.parquet",), force=force, upstream=manifest_in, allow_empty=allow_empty)


filter.config_class = FilterConfig  # recipe schema for **options (dataprep.recipe)
