"""`dataprep dedupe`: exact, near (MinHash) and semantic (embedding) deduplication you can inspect.

The methods run in the order given, each on the rows the previous one kept. Each finds pairs,
groups them into connected components, keeps one row per group (the keep policy) and removes
the others, recording for every removed row the row it duplicates (`kept_id`), the method and
the score. Row ids are 0-based positions in the input file.

Outputs (one directory, written atomically): records.parquet (kept rows, input schema
unchanged), removed.parquet, pairs.parquet, report.json, report.html, manifest.json.

Library entry points: `dedupe(path, out, ...)`, `sweep(path, thresholds, ...)`, and the
per-method pieces `exact_pairs`, `near_pairs`, `semantic_pairs`, `cluster_pairs`,
`group_and_keep`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dataprep.dedupe.exact import exact_pairs, normalize_text
from dataprep.dedupe.groups import KEEP_POLICIES, Groups, group_and_keep
from dataprep.dedupe.minhash import near_pairs
from dataprep.dedupe.semantic import cluster_pairs, semantic_pairs
from dataprep.errors import DataprepError
from dataprep.records import infer_kind

__all__ = [
    "DEFAULT_THRESHOLD",
    "DedupeConfig",
    "KEEP_POLICIES",
    "METHODS",
    "cluster_pairs",
    "dedupe",
    "exact_pairs",
    "group_and_keep",
    "near_pairs",
    "normalize_text",
    "record_texts",
    "semantic_pairs",
    "sweep",
]

METHODS = ("exact", "near", "semantic")
# Chosen from the STS-B precision/recall curve (benchmarks/stsb_threshold.py, benchmarks/RESULTS.md).
DEFAULT_THRESHOLD = 0.85
EXTRA_COLUMNS = ("id", "kept_id", "method", "score")


@dataclass(frozen=True)
class DedupeConfig:
    methods: tuple[str, ...] = METHODS
    on: tuple[str, ...] | None = None  # text fields; None = the record kind's default
    keep: str = "first"
    seed: int = 0
    near_threshold: float = 0.8
    ngram: int = 5
    ngram_unit: str = "char"
    num_perm: int = 128
    threshold: float = DEFAULT_THRESHOLD
    model: str = "minilm"
    device: str = "auto"
    batch_size: int = 64
    clusters: int | None = None

    def check(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise DataprepError(f"unknown method(s) {', '.join(bad) or '(none)'}; --methods takes a comma list of {', '.join(METHODS)}")
        if len(set(self.methods)) < len(self.methods):
            raise DataprepError(f"--methods names a method twice ({','.join(self.methods)}); name each once")
        if self.keep not in KEEP_POLICIES:
            raise DataprepError(f"unknown --keep {self.keep!r}; choose one of {', '.join(KEEP_POLICIES)}")
        for name, t in (("--near-threshold", self.near_threshold), ("--threshold", self.threshold)):
            if not 0.0 < t <= 1.0:
                raise DataprepError(f"{name} must be in (0, 1], got {t}")
        if self.ngram_unit not in ("char", "word") or self.ngram < 1:
            raise DataprepError("--ngram must be ≥ 1 and --ngram-unit char or word")
        if self.clusters is not None and self.clusters < 1:
            raise DataprepError(f"--clusters must be ≥ 1, got {self.clusters}")


# ---------------------------------------------------------------- which text


def text_fields(columns: list[str], kind: str | None, on: tuple[str, ...] | None) -> tuple[str, ...]:
    """The fields to compare: `on` if given, else the kind's default; every one must exist."""
    from dataprep.records import DEFAULT_TEXT_FIELDS

    kind = kind or infer_kind(columns)
    fields = tuple(on) if on else DEFAULT_TEXT_FIELDS.get(kind, ())
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


# ---------------------------------------------------------------- the run


@dataclass
class MethodResult:
    method: str
    removed: np.ndarray  # global ids
    kept_id: np.ndarray
    score: np.ndarray
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray]  # global ids, score
    group_sizes: np.ndarray
    below: tuple[np.ndarray, np.ndarray, np.ndarray]
    stats: dict = field(default_factory=dict)


def _finish(method, alive, a, b, score, groups: Groups, removed_score, below, stats) -> MethodResult:
    removed = groups.removed
    keeper = groups.keeper[removed]
    return MethodResult(
        method,
        alive[removed],
        alive[keeper],
        removed_score(removed, keeper).astype(np.float32),
        (alive[a], alive[b], score.astype(np.float32)),
        groups.sizes(),
        (alive[below[0]], alive[below[1]], below[2].astype(np.float32)),
        stats,
    )


def run_exact(texts, alive, cfg: DedupeConfig, timer) -> MethodResult:
    sub = [texts[i] for i in alive]
    with timer("exact"):
        a, b, s = exact_pairs(sub)
        groups = group_and_keep(len(sub), a, b, s, keep=cfg.keep if cfg.keep != "centroid" else "first",
                                lengths=[len(t) for t in sub], seed=cfg.seed)
    empty = (np.array([not t.strip() for t in sub], dtype=bool)) if sub else np.zeros(0, dtype=bool)
    none = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))
    return _finish("exact", alive, a, b, s, groups, lambda r, k: np.ones(len(r)), none, {"empty_texts": int(empty.sum())})


def run_near(texts, alive, cfg: DedupeConfig, timer) -> MethodResult:
    from dataprep.dedupe.minhash import jaccard

    sub = [texts[i] for i in alive]
    with timer("near"):
        res = near_pairs(sub, cfg.near_threshold, ngram=cfg.ngram, unit=cfg.ngram_unit, num_perm=cfg.num_perm)
    with timer("group"):
        groups = group_and_keep(len(sub), res.a, res.b, res.score, keep=cfg.keep, lengths=[len(t) for t in sub],
                                seed=cfg.seed)
    stats = {**res.stats, "no_shingles": int((res.shingles.sizes() == 0).sum())}
    return _finish("near", alive, res.a, res.b, res.score, groups, lambda r, k: jaccard(res.shingles, r, k),
                   res.below, stats)


def run_semantic(texts, alive, cfg: DedupeConfig, timer, *, cache: bool, progress: bool) -> tuple[MethodResult, np.ndarray, dict]:
    from dataprep.embed import embed_texts, load_encoder

    sub = [texts[i] for i in alive]
    with timer("embed"):
        encoder = load_encoder(cfg.model, cfg.device)
        emb = embed_texts(sub, encoder, batch_size=cfg.batch_size, use_cache=cache, progress=progress)
    with timer("search"):
        if cfg.clusters:
            res = cluster_pairs(emb, cfg.threshold, cfg.clusters, device=encoder.device)
        else:
            res = semantic_pairs(emb, cfg.threshold, device=encoder.device, progress=progress)
    with timer("group"):
        groups = group_and_keep(len(sub), res.a, res.b, res.score, keep=cfg.keep, lengths=[len(t) for t in sub],
                                seed=cfg.seed, embeddings=emb if cfg.keep == "centroid" else None)
    embed_stats = {"model": cfg.model, "device": encoder.device, **encoder.stats, "max_tokens": encoder.max_tokens}
    result = _finish("semantic", alive, res.a, res.b, res.score, groups,
                     lambda r, k: np.einsum("ij,ij->i", emb[r], emb[k]), res.below, {**res.stats, **embed_stats})
    return result, res.nearest, embed_stats


def _scan(path, cfg: DedupeConfig):
    """(data file, input manifest, kind, text fields) from the file's schema, before reading it."""
    from dataprep.io import find_data_file, read_manifest, record_columns

    data = find_data_file(path)
    if data.stat().st_size == 0:
        raise DataprepError(f"{data} is empty (0 bytes): there are no rows to dedupe; check the path or the previous stage")
    manifest_in = (read_manifest(data.parent) if Path(path).is_dir() else None) or {}
    columns = record_columns(data)
    kind = manifest_in.get("kind") or infer_kind(columns)
    return data, manifest_in, kind, text_fields(columns, kind, cfg.on)


def dedupe(path: str | Path, out: str | Path, *, force: bool = False, cache: bool = True, progress: bool = False,
           **options: Any) -> dict[str, Any]:
    """Deduplicate the records at `path` into the directory `out`; returns the manifest.

    `options` are the fields of DedupeConfig (methods, on, keep, seed, near_threshold, ngram,
    ngram_unit, num_perm, threshold, model, device, batch_size, clusters). A rerun whose
    fingerprint matches the manifest in `out` returns it with `skipped: True`.
    """
    from dataprep.io import Timer, current_manifest, describe_inputs, read_records, stage_fingerprint

    cfg = _config(options)
    data, manifest_in, kind, fields = _scan(path, cfg)
    config = {**asdict(cfg), "on": list(fields)}
    inputs = describe_inputs([str(data)])
    fp = stage_fingerprint("dedupe", inputs, config)
    if not force and (done := current_manifest(out, fp)):
        return {**done, "skipped": True}
    timer = Timer()
    with timer("read"):
        frame, _ = read_records(data)
    texts = record_texts(frame, fields)
    results, nearest, embed_stats = run_methods(texts, cfg, timer, cache=cache, progress=progress)
    from dataprep.dedupe.report import write_outputs

    return write_outputs(out, frame, texts, results, nearest, embed_stats, cfg=cfg, config=config, inputs=inputs,
                         fp=fp, kind=kind, fields=fields, manifest_in=manifest_in, timer=timer)


dedupe.config_class = DedupeConfig  # recipe schema for **options (dataprep.recipe)


def _config(options: dict[str, Any]) -> DedupeConfig:
    unknown = set(options) - set(DedupeConfig.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown dedupe option(s): {', '.join(sorted(unknown))}")
    if "methods" in options:
        options["methods"] = tuple(options["methods"])
    if options.get("on"):
        options["on"] = tuple(options["on"])
    cfg = DedupeConfig(**options)
    cfg.check()
    return cfg


def run_methods(texts, cfg: DedupeConfig, timer, *, cache: bool = True, progress: bool = False):
    """Run the methods in order, each on what the previous kept. Returns (results, nearest sims, embed stats)."""
    alive = np.arange(len(texts))
    results, nearest, embed_stats = [], None, {}
    for method in cfg.methods:
        if len(alive) == 0:
            break
        if method == "exact":
            res = run_exact(texts, alive, cfg, timer)
        elif method == "near":
            res = run_near(texts, alive, cfg, timer)
        else:
            res, near_sub, embed_stats = run_semantic(texts, alive, cfg, timer, cache=cache, progress=progress)
            nearest = np.full(len(texts), np.nan, dtype=np.float32)
            nearest[alive] = near_sub
        results.append(res)
        alive = np.setdiff1d(alive, res.removed, assume_unique=True)
    return results, nearest, embed_stats


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
    from dataprep.io import Timer, read_records

    cfg = _config({**options, "threshold": min(thresholds)})
    if "semantic" not in cfg.methods:
        raise DataprepError("--sweep varies the semantic threshold; include semantic in --methods")
    data, _, _, fields = _scan(path, cfg)
    texts = record_texts(read_records(data)[0], fields)
    timer = Timer()
    before = [m for m in cfg.methods if m != "semantic"]
    early, _, _ = run_methods(texts, DedupeConfig(**{**asdict(cfg), "methods": tuple(before)}), timer) if before else ([], None, None)
    alive = np.setdiff1d(np.arange(len(texts)), np.concatenate([r.removed for r in early]) if early else [])
    n_early = len(texts) - len(alive)
    sem, _, _ = run_semantic(texts, alive, cfg, timer, cache=cache, progress=progress) if len(alive) else (None, None, None)
    rows = []
    local = {g: k for k, g in enumerate(alive)}
    for t in thresholds:
        n_sem = 0
        if sem is not None:
            keep = sem.pairs[2] >= t
            a = np.array([local[g] for g in sem.pairs[0][keep]], dtype=np.int64)
            b = np.array([local[g] for g in sem.pairs[1][keep]], dtype=np.int64)
            n_sem = len(group_and_keep(len(alive), a, b).removed)
        rows.append({"threshold": t, "removed": n_early + n_sem, "semantic": n_sem, "kept": len(texts) - n_early - n_sem})
    if plot:
        from dataprep.dedupe.report import sweep_plot

        sweep_plot(rows, len(texts), plot)
    return rows
