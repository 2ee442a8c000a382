"""The dedupe stage: read records, pick the text each record is compared by, run the methods
(dataprep.dedupe.methods), and write kept rows, removed rows, pairs and the report through the
stage contract (dataprep.stage). `sweep` shows rows removed per semantic threshold without writing.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from dataprep.dedupe import report as reports
from dataprep.dedupe.against import DEFAULT_AGAINST_METHODS
from dataprep.dedupe.methods import (
    DedupeConfig,
    cosines,
    embed_and_search,
    language_gate,
    make_config,
    run_methods,
    semantic_groups,
)
from dataprep.engine import NOT_FINGERPRINTED
from dataprep.errors import DataprepError
from dataprep.records import infer_kind
from dataprep.stage import Manifest, Outcome, Workspace, run_stage

# ---------------------------------------------------------------- which text


def text_fields(columns: list[str], kind: str | None, on: tuple[str, ...] | None) -> tuple[str, ...]:
    """The fields to compare: `on` if given, else the kind's default; every one must exist."""
    from dataprep.records import KIND_TABLE

    kind = kind or infer_kind(columns)
    fields = tuple(on) if on else (KIND_TABLE[kind].text if kind in KIND_TABLE else ())
    if not fields:
        raise DataprepError(
            f"cannot tell which column holds the text (columns: {', '.join(columns) or 'none'}); pass --on COLUMN"
        )
    missing = [f for f in fields if f not in columns]
    if missing:
        raise DataprepError(
            f"--on column(s) {', '.join(missing)} not in the input; columns are: {', '.join(columns) or 'none'}"
        )
    return fields


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):  # a chat message
        return f"{value.get('role', '')}: {value.get('content', '') or ''}"
    if isinstance(value, list):
        return "\n".join(_as_text(v) for v in value)
    return str(value)


def record_texts(frame, fields: tuple[str, ...]) -> list[str]:
    """Each row's text: the fields' values joined by a blank line (empty fields skipped)."""
    columns = [frame.get_column(f).to_list() for f in fields]
    return ["\n\n".join(t for t in (_as_text(v) for v in values) if t) for values in zip(*columns, strict=False)]


def _scan(path, cfg: DedupeConfig):
    """(data file, input manifest, kind, text fields) from the file's schema, before reading it."""
    from dataprep.stage import scan_records

    data, manifest_in, kind, columns = scan_records(path, "dedupe")
    return data, manifest_in, kind, text_fields(columns, kind, cfg.on)


def dedupe(path: str | Path, out: str | Path, *, force: bool = False, cache: bool = True, progress: bool = False,
           **options: Any) -> Manifest:
    """Deduplicate the records at `path` into the directory `out`; returns the manifest.

    `options` are the fields of DedupeConfig (methods, on, keep, seed, near_threshold, ngram,
    ngram_unit, num_perm, threshold, model, device, batch_size, embed_workers, clusters,
    allow_model_language_mismatch). Without `methods` (or with None) the default methods run, and
    semantic is skipped with a warning when the model does not read most texts; with `methods`
    naming semantic, that is refused (dataprep.dedupe.methods). A rerun whose fingerprint matches
    the manifest in `out` returns it with `skipped` set.
    """
    explicit = options.get("methods") is not None
    if not explicit:
        options.pop("methods", None)
        if options.get("against"):
            options["methods"] = DEFAULT_AGAINST_METHODS
    cfg = make_config(options)
    if "ngram" in cfg.methods and not cfg.against:
        raise DataprepError("the ngram method compares against eval sets: give --against EVAL, or use exact, near "
                            "or semantic")
    data, manifest_in, kind, fields = _scan(path, cfg)
    if cfg.against:
        return _decontaminate(data, out, manifest_in, kind, fields, cfg, force=force, cache=cache, progress=progress)

    def build(ws: Workspace) -> Outcome:
        from dataprep.io import read_records

        with ws.timer("read"):
            frame = read_records(data)
        texts = record_texts(frame, fields)
        with engine_cluster(cfg):  # one Ray cluster for every method (none for the local engine)
            results, nearest, embed_stats = run_methods(texts, cfg, ws.timer, cache=cache, progress=progress,
                                                        explicit=explicit)
        n_kept = write_outputs(ws.out, frame, texts, results, nearest, embed_stats, cfg, fields, ws.timer)
        details = {"text_fields": list(fields), "report": "report.json",
                   "warnings": reports.collect_warnings(texts, results, embed_stats)}
        if embed_stats.get("semantic_skipped"):
            details["semantic_skipped"] = True
        return Outcome(frame.height, n_kept, details, removed={r.method: int(len(r.removed)) for r in results},
                       lineage={"kind": kind})

    manifest = run_stage("dedupe", out, inputs=[str(data)], config=_fingerprinted(cfg, fields), build=build,
                         data_files=("records.parquet",), force=force, upstream=manifest_in,
                         allow_empty=cfg.allow_empty)
    if manifest.skipped and explicit and manifest.get("semantic_skipped"):
        # an up-to-date output of a default run that skipped semantic does not answer a request for semantic
        return run_stage("dedupe", out, inputs=[str(data)], config=_fingerprinted(cfg, fields), build=build,
                         data_files=("records.parquet",), force=True, upstream=manifest_in,
                         allow_empty=cfg.allow_empty)
    return manifest


def _decontaminate(data, out, manifest_in, kind, fields, cfg: DedupeConfig, *, force: bool, cache: bool,
                   progress: bool) -> Manifest:
    """`dedupe --against`: remove the rows matching an eval row (dataprep.dedupe.against)."""
    from dataprep.dedupe import against as ag
    from dataprep.io import read_records, write_json

    ev = ag.read_eval(cfg.against, cfg.against_on)

    def build(ws: Workspace) -> Outcome:
        with ws.timer("read"):
            frame = read_records(data)
        texts = record_texts(frame, fields)
        if "semantic" in cfg.methods:
            with ws.timer("language"):
                language_gate(texts + ev.texts, cfg, explicit=True)
        results = ag.decontaminate(texts, ev, cfg, ws.timer, cache=cache, progress=progress)
        with ws.timer("write"):
            removed = np.concatenate([h.train for h in results]) if results else np.empty(0, np.int64)
            kept = np.setdiff1d(np.arange(frame.height), removed)
            (frame[kept.tolist()] if len(kept) else frame.clear()).write_parquet(ws.out / "records.parquet")
            ag.removed_frame(frame, results, ev).write_parquet(ws.out / "removed.parquet")
            report = ag.build_report(frame.height, ev, results, cfg, fields, ws.timer)
            (ws.out / "report.html").write_text(ag.render_html(report, texts, ev, results), encoding="utf-8")
            write_json(ws.out / "report.json", report)
        details = {"text_fields": list(fields), "report": "report.json", "against": report["against"],
                   "methods": {m: {k: v for k, v in s.items() if k != "removed"} for m, s in report["methods"].items()},
                   "warnings": ["--against ran on the local engine (--engine ray applies to within-set dedupe only)"]
                   if cfg.engine == "ray" else []}
        return Outcome(frame.height, int(len(kept)), details,
                       removed={f"contaminated ({h.method})": int(len(h.train)) for h in results},
                       lineage={"kind": kind})

    return run_stage("dedupe", out, inputs=[str(data), *ev.files], config=_fingerprinted(cfg, fields), build=build,
                     data_files=("records.parquet",), force=force, upstream=manifest_in, allow_empty=cfg.allow_empty)


def engine_cluster(cfg: DedupeConfig):
    """The Ray cluster of --engine ray (started here, or at --ray-address), else nothing."""
    import contextlib

    from dataprep.engine import cluster

    return cluster(cfg.ray_address) if cfg.engine == "ray" else contextlib.nullcontext()


def _fingerprinted(cfg: DedupeConfig, fields) -> dict[str, Any]:
    """What decides the output: the options (not allow_empty, which only permits an empty one, nor the
    engine or the embedding workers, which give the same output, nor the batch size, which only changes
    fp16 rounding (the embedding cache treats batchings as interchangeable too), nor the eval paths,
    which count by their contents as inputs) and the fields."""
    skip = ("allow_empty", "against", "embed_workers", "batch_size", *NOT_FINGERPRINTED)
    return {**{k: v for k, v in asdict(cfg).items() if k not in skip}, "on": list(fields)}


def write_outputs(out: Path, frame, texts, results, nearest, embed_stats, cfg, fields, timer) -> int:
    """Kept rows, removed rows, pairs, report.json and report.html into `out`; returns the kept count."""
    from dataprep.io import write_json

    n = frame.height
    warnings = reports.collect_warnings(texts, results, embed_stats)
    with timer("write"):
        removed_ids = np.concatenate([r.removed for r in results]) if results else np.empty(0, np.int64)
        kept = np.setdiff1d(np.arange(n), removed_ids)
        (frame[kept.tolist()] if len(kept) else frame.clear()).write_parquet(out / "records.parquet")
        reports.removed_frame(frame, results).write_parquet(out / "removed.parquet")
        reports.pairs_frame(results).write_parquet(out / "pairs.parquet")
        report = reports.build_report(n, texts, results, embed_stats, cfg, fields, timer, warnings)
        (out / "report.html").write_text(reports.render_html(report, texts, results, nearest, cfg), encoding="utf-8")
    report["timings"] = dict(timer.seconds)
    write_json(out / "report.json", report)
    return int(len(kept))


dedupe.config_class = DedupeConfig  # recipe schema for **options (dataprep.recipe)


def parse_sweep(spec: str) -> list[float]:
    """`0.80:0.99:0.01` → [0.80, 0.81, ..., 0.99] (both ends included)."""
    try:
        lo, hi, step = (float(x) for x in spec.split(":"))
    except ValueError:
        raise DataprepError(f"--sweep takes START:STOP:STEP, e.g. 0.80:0.99:0.01, not {spec!r}") from None
    if not (0 < lo <= hi <= 1 and step > 0):
        raise DataprepError(f"--sweep {spec!r}: need 0 < START ≤ STOP ≤ 1 and STEP > 0")
    return [round(lo + k * step, 6) for k in range(int(round((hi - lo) / step)) + 1)]


def sweep(path: str | Path, thresholds: list[float], plot: str | Path | None = None, *, cache: bool = True,
          progress: bool = False, **options: Any) -> list[dict[str, Any]]:
    """Rows removed at each semantic threshold (after the earlier methods), without writing outputs.

    Embeds and searches once at the lowest threshold; each threshold then only regroups the
    pairs at or above it. Writes a PNG plot to `plot` if given.
    """
    from dataprep.io import read_records
    from dataprep.stage import Timer

    cfg = make_config({**options, "threshold": min(thresholds)})
    if "semantic" not in cfg.methods:
        raise DataprepError("--sweep varies the semantic threshold; include semantic in --methods")
    data, _, _, fields = _scan(path, cfg)
    texts = record_texts(read_records(data), fields)
    timer = Timer()
    language_gate(texts, cfg, explicit=True)  # a sweep asks for semantic: refused where the model cannot read the texts
    with engine_cluster(cfg):  # one Ray cluster for the earlier methods and the embedding (none for local)
        return _sweep(texts, thresholds, plot, cfg, timer, cache=cache, progress=progress)


def _sweep(texts, thresholds, plot, cfg: DedupeConfig, timer, *, cache: bool, progress: bool) -> list[dict[str, Any]]:
    before = [m for m in cfg.methods if m != "semantic"]
    early, _, _ = run_methods(texts, DedupeConfig(**{**asdict(cfg), "methods": tuple(before)}), timer) if before else ([], None, None)
    alive = np.setdiff1d(np.arange(len(texts)), np.concatenate([r.removed for r in early]) if early else [])
    n_early = len(texts) - len(alive)
    if len(alive):
        emb, res, _ = embed_and_search(texts, alive, cfg, timer, cache=cache, progress=progress)
        direct = cosines(emb, res.a, res.b)
        lengths = [len(texts[i]) for i in alive]
        pinned = np.isin(alive, np.concatenate([r.kept_id for r in early])) if early else None  # as in run_methods
    rows = []
    for t in thresholds:
        n_sem = len(semantic_groups(emb, res.a, res.b, direct, t, cfg, lengths, pinned).removed) if len(alive) else 0
        rows.append({"threshold": t, "removed": n_early + n_sem, "semantic": n_sem, "kept": len(texts) - n_early - n_sem})
    if plot:
        reports.sweep_plot(rows, len(texts), plot)
    return rows
