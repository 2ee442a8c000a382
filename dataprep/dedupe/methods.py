"""Dedupe's methods and options: each method finds pairs among the rows still alive, groups them
and keeps one row per group (dataprep.dedupe.groups), and reports what it removed and why.

`run_methods` runs the configured methods in order, each on the rows the previous one kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dataprep.dedupe.exact import exact_pairs
from dataprep.dedupe.groups import KEEP_POLICIES, Groups, group_and_keep
from dataprep.dedupe.minhash import near_pairs
from dataprep.dedupe.semantic import cluster_pairs, semantic_pairs
from dataprep.errors import DataprepError

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


def make_config(options: dict[str, Any]) -> DedupeConfig:
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
