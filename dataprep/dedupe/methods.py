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
from dataprep.options import opt, parse_options

METHODS = ("exact", "near", "semantic")
# Chosen from the STS-B precision/recall curve (benchmarks/stsb_threshold.py, benchmarks/RESULTS.md).
DEFAULT_THRESHOLD = 0.85
EXTRA_COLUMNS = ("id", "kept_id", "method", "score")


def _each_once(methods: tuple[str, ...]) -> str | None:
    if not methods:
        return f"no method given; name one or more of {', '.join(METHODS)}"
    if len(set(methods)) < len(methods):
        return f"{','.join(methods)} names a method twice; name each once"
    return None


@dataclass(frozen=True)
class DedupeConfig:
    """The dedupe stage's options (dataprep.options): CLI flags, recipe keys and `dedupe(**options)`."""

    methods: tuple[str, ...] = opt(METHODS, "Comma list, run in this order, each on what the previous kept.",
                                   choices=METHODS, check=_each_once)
    on: tuple[str, ...] | None = opt(None, "Comma list of fields to compare (default: the record kind's text).")
    keep: str = opt("first", "Which row of a group to keep.", choices=KEEP_POLICIES)
    seed: int = opt(0, "Seed for --keep random and --clusters.", min=0)
    near_threshold: float = opt(0.8, "Jaccard threshold for near.", min=0, max=1, min_open=True)
    ngram: int = opt(5, "n-gram size for near.", min=1)
    ngram_unit: str = opt("char", "n-grams of characters or of words.", choices=("char", "word"))
    num_perm: int = opt(128, "MinHash permutations.", min=1)
    threshold: float = opt(DEFAULT_THRESHOLD, "Cosine threshold for semantic (chosen on STS-B; see README).",
                           min=0, max=1, min_open=True)
    model: str = opt("minilm", "Sentence-transformers model: name, path or Hub id.")
    device: str = opt("auto", "auto, cuda, mps or cpu.")
    batch_size: int = opt(64, "Embedding batch size.", min=1)
    clusters: int | None = opt(None, "Approximate semantic search: k-means with K clusters first.", min=1)


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
    return parse_options(DedupeConfig, options, "dedupe")


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
