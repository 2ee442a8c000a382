"""Dedupe's methods and options: each method finds pairs among the rows still alive, groups them,
removes a row only for a pair partner that stays (dataprep.dedupe.groups), and reports what it
removed and why.

`run_methods` runs the configured methods in order, each on the rows the previous one kept.
Before semantic, the texts' scripts are checked against the model's languages
(dataprep.dedupe.language): when most texts are in scripts the model does not read, semantic is
refused if it was asked for (methods given), skipped with a warning if it was only the default,
and run with a warning under `allow_model_language_mismatch`. After the search, a median
nearest-neighbour similarity within `SEPARATION_MARGIN` of the threshold is warned about: the
embeddings do not separate the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dataprep.dedupe import groups_on_ray, on_ray
from dataprep.dedupe.exact import exact_pairs
from dataprep.dedupe.groups import KEEP_POLICIES, Groups, group_and_keep
from dataprep.dedupe.minhash import near_pairs
from dataprep.dedupe.semantic import cluster_pairs, semantic_pairs
from dataprep.engine import EngineOptions
from dataprep.errors import DataprepError
from dataprep.options import opt, parse_options
from dataprep.stage import OutputOptions

METHODS = ("exact", "near", "semantic")
ALL_METHODS = ("exact", "ngram", "near", "semantic")  # ngram: only with --against (dataprep.dedupe.against)
# Chosen from the STS-B precision/recall curve (benchmarks/stsb_threshold.py, benchmarks/RESULTS.md).
DEFAULT_THRESHOLD = 0.85
SEPARATION_MARGIN = 0.05  # warn when the median nearest-neighbour similarity is this close to the threshold (or above)
EXTRA_COLUMNS = ("id", "kept_id", "method", "score")


def _each_once(methods: tuple[str, ...]) -> str | None:
    if not methods:
        return f"no method given; name one or more of {', '.join(METHODS)}"
    if len(set(methods)) < len(methods):
        return f"{','.join(methods)} names a method twice; name each once"
    return None


@dataclass(frozen=True)
class DedupeConfig(EngineOptions, OutputOptions):
    """The dedupe stage's options (dataprep.options): CLI flags, recipe keys and `dedupe(**options)`."""

    methods: tuple[str, ...] = opt(METHODS, "Comma list, run in this order, each on what the previous kept; when "
                                   "not given, semantic is skipped (with a warning) where --model does not read most "
                                   "texts. With --against: exact, ngram, near, semantic [default: exact,ngram].",
                                   choices=ALL_METHODS, check=_each_once)
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
    batch_size: int | None = opt(None, "Embedding batch size in texts (default: 64 on CPU; on a GPU as many "
                                 "length-sorted texts as fit in 131,072 padded tokens).", min=1)
    embed_workers: str = opt("auto", "Embedding on several GPUs: one worker process per GPU (auto, processes) or "
                             "threads in this process (threads).", choices=("auto", "threads", "processes"))
    clusters: int | None = opt(None, "Approximate semantic search: k-means with K clusters first.", min=1)
    allow_model_language_mismatch: bool = opt(
        False, "Run semantic even when most texts are in scripts --model does not read (refused otherwise).")
    against: tuple[str, ...] | None = opt(None, "Decontaminate: remove the rows that match a row of this eval set "
                                          "(records or any file convert reads; repeatable). The eval rows are "
                                          "never changed.", multiple=True, metavar="EVAL")
    against_on: tuple[str, ...] | None = opt(None, "Comma list of the eval sets' fields to compare (default: their "
                                             "record kind's text, or every text column of a raw file).")
    against_ngram: int = opt(13, "Word n-gram size of --against's ngram method.", min=1)
    min_overlap: float = opt(0.0, "ngram: the share of an eval row's n-grams a row must contain (0: any one).",
                             min=0, max=1)


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


def _finish(method, alive, a, b, score, groups: Groups, below, stats) -> MethodResult:
    removed = groups.removed
    return MethodResult(
        method,
        alive[removed],
        alive[groups.keeper[removed]],
        groups.score[removed].astype(np.float32),
        (alive[a], alive[b], score.astype(np.float32)),
        groups.sizes(),
        (alive[below[0]], alive[below[1]], below[2].astype(np.float32)),
        {**stats, "kept_in_groups": groups.kept_in_groups()},
    )


def _on_ray(cfg: DedupeConfig, pairs: int) -> bool:
    """Whether the pairs are grouped on Ray Data: --engine ray, and more pairs than the command's
    machine groups (groups_on_ray.DRIVER_GROUPING_MAX_PAIRS)."""
    return cfg.engine == "ray" and pairs > groups_on_ray.DRIVER_GROUPING_MAX_PAIRS


def _grouping_step(cfg: DedupeConfig, pairs: int) -> str:
    """The grouping's name in the stage's timings (where it ran)."""
    return "group on ray" if _on_ray(cfg, pairs) else "group"


def _group(n: int, a, b, score, cfg: DedupeConfig, **options) -> Groups:
    """group_and_keep, on Ray Data beyond the bound (the same groups, kept rows, kept_ids and scores)."""
    grouping = groups_on_ray.group_and_keep_on_ray if _on_ray(cfg, len(a)) else group_and_keep
    return grouping(n, a, b, score, keep=cfg.keep, seed=cfg.seed, **options)


def run_exact(texts, alive, cfg: DedupeConfig, timer, pinned=None) -> MethodResult:
    sub = [texts[i] for i in alive]
    keep, lengths = cfg.keep if cfg.keep != "centroid" else "first", [len(t) for t in sub]
    with timer("exact"):
        if cfg.engine == "ray":  # a shuffle by hash, the keep policy inside each group
            a, b, s, groups = on_ray.exact_groups(sub, keep=keep, lengths=lengths, seed=cfg.seed,
                                                  pinned=np.zeros(len(sub), bool) if pinned is None else pinned)
        else:
            a, b, s = exact_pairs(sub)
            # equal texts: every group is one cluster (transitive), so each keeps one row
            groups = group_and_keep(len(sub), a, b, s, keep=keep, lengths=lengths, seed=cfg.seed, transitive=True,
                                    pinned=pinned)
    empty = (np.array([not t.strip() for t in sub], dtype=bool)) if sub else np.zeros(0, dtype=bool)
    none = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))
    return _finish("exact", alive, a, b, s, groups, none, {"empty_texts": int(empty.sum())})


def run_near(texts, alive, cfg: DedupeConfig, timer, pinned=None) -> MethodResult:
    """Every pair's score is its true Jaccard (checked after LSH), so a removal rests on the pair itself."""
    sub = [texts[i] for i in alive]
    with timer("near"):
        find = on_ray.near_pairs if cfg.engine == "ray" else near_pairs
        res = find(sub, cfg.near_threshold, ngram=cfg.ngram, unit=cfg.ngram_unit, num_perm=cfg.num_perm)
    with timer(_grouping_step(cfg, len(res.a))):
        groups = _group(len(sub), res.a, res.b, res.score, cfg, lengths=[len(t) for t in sub], pinned=pinned)
    stats = res.stats
    return _finish("near", alive, res.a, res.b, res.score, groups, res.below, stats)


def embed_and_search(texts, alive, cfg: DedupeConfig, timer, *, cache: bool, progress: bool):
    """(embeddings of the alive rows, their SearchResult, embedding stats) at cfg.threshold."""
    from dataprep.embed import embed_texts, load_encoder

    sub = [texts[i] for i in alive]
    with timer("embed"):
        encoder = load_encoder(cfg.model, cfg.device, workers=cfg.embed_workers)
        try:
            emb = embed_texts(sub, encoder, batch_size=cfg.batch_size, use_cache=cache, progress=progress,
                              engine=cfg.engine)  # ray: in actors; the search below stays on the driver
            max_tokens = encoder.max_tokens  # read while the model is loaded (closed, it may have to load again)
        finally:
            encoder.close()  # worker processes and model copies give their GPU memory back before the search
    with timer("search"):
        if cfg.clusters:
            res = cluster_pairs(emb, cfg.threshold, cfg.clusters, device=encoder.device)
        else:
            res = semantic_pairs(emb, cfg.threshold, devices=encoder.devices, progress=progress)
    embed_stats = {"model": cfg.model, "device": encoder.device, "devices": encoder.devices, **encoder.stats,
                   "max_tokens": max_tokens}
    return emb, res, embed_stats


def cosines(emb: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 cosine of each pair (a[k], b[k]) of L2-normalised rows (the search may have run in fp16)."""
    emb = np.asarray(emb, dtype=np.float32)
    return np.einsum("ij,ij->i", emb[a], emb[b]) if len(a) else np.empty(0, np.float32)


def semantic_groups(emb, a, b, direct, threshold: float, cfg: DedupeConfig, lengths, pinned=None) -> Groups:
    """Groups over the pairs whose float32 cosine `direct` is at or above `threshold`."""
    ok = direct >= threshold
    return _group(len(emb), a[ok], b[ok], direct[ok], cfg, lengths=lengths,
                  embeddings=emb if cfg.keep == "centroid" else None, pinned=pinned)


def run_semantic(texts, alive, cfg: DedupeConfig, timer, *, cache: bool, progress: bool,
                 pinned=None) -> tuple[MethodResult, np.ndarray, dict]:
    emb, res, embed_stats = embed_and_search(texts, alive, cfg, timer, cache=cache, progress=progress)
    direct = cosines(emb, res.a, res.b)
    with timer(_grouping_step(cfg, int((direct >= cfg.threshold).sum()))):
        groups = semantic_groups(emb, res.a, res.b, direct, cfg.threshold, cfg, [len(texts[i]) for i in alive], pinned)
    nearest = res.nearest[res.nearest > -1]  # -1: a single row has no neighbour
    median = float(np.median(nearest)) if len(nearest) else None
    stats = {**res.stats, **embed_stats, "median_nearest": round(median, 4) if median is not None else None}
    result = _finish("semantic", alive, res.a, res.b, res.score, groups, res.below, stats)
    return result, res.nearest, embed_stats


def separation_warning(stats: dict, threshold: float) -> str | None:
    """A warning when the median nearest-neighbour similarity is within SEPARATION_MARGIN of the threshold (or above)."""
    median = stats.get("median_nearest")
    if median is None or median < threshold - SEPARATION_MARGIN:
        return None
    return (f"semantic: the median nearest-neighbour similarity is {median:.3f}, within {SEPARATION_MARGIN} of the "
            f"threshold {threshold} (or above): model {stats.get('model')!r} does not separate these texts, so half "
            "the rows have a neighbour about as close as a duplicate; check the removed pairs in report.html, "
            "or use a model that reads this data")


def language_gate(texts, cfg: DedupeConfig, *, explicit: bool) -> tuple[bool, dict, list[str]]:
    """Whether semantic runs, the language check for the report, and warnings; raises when it is refused."""
    from dataprep.dedupe import language
    from dataprep.models import resolve_model

    lang = language.check(texts, cfg.model, resolve_model(cfg.model))
    if lang.mismatch:
        if cfg.allow_model_language_mismatch:
            return True, lang.to_json(), [f"semantic ran although {lang.what()} ({language.OVERRIDE_FLAG})"]
        if explicit:
            raise DataprepError(f"semantic dedupe refused: {lang.what()}; {lang.remedy()}; or leave semantic out "
                                "of --methods")
        return False, lang.to_json(), [f"semantic skipped (exact and near ran): {lang.what()}; {lang.remedy()}"]
    if lang.covered is None:
        return True, lang.to_json(), [f"semantic: cannot tell which languages model {cfg.model!r} reads (no "
                                      "`language:` in its model card, not in dataprep's table): check report.html"]
    if lang.share_outside > language.WARN_SHARE:
        return True, lang.to_json(), [f"semantic: {lang.what()}; their semantic matches are unreliable"]
    return True, lang.to_json(), []


def make_config(options: dict[str, Any]) -> DedupeConfig:
    return parse_options(DedupeConfig, options, "dedupe")


def run_methods(texts, cfg: DedupeConfig, timer, *, cache: bool = True, progress: bool = False,
                explicit: bool = True):
    """Run the methods in order, each on what the previous kept. Returns (results, nearest sims, embed stats).

    `explicit`: the methods were asked for (a missing semantic model language is then refused, not skipped).
    Embed stats carry the language check (`language`) and its `warnings`. The rows a method kept
    for the rows it removed are pinned for the later methods, so every kept_id stays.
    """
    alive = np.arange(len(texts))
    pinned = np.zeros(len(texts), dtype=bool)
    results, nearest, embed_stats = [], None, {}
    methods = cfg.methods
    if "semantic" in methods and len(texts):
        with timer("language"):
            runs, lang, warnings = language_gate(texts, cfg, explicit=explicit)
        embed_stats = {"language": lang, "warnings": warnings}
        if not runs:
            methods = tuple(m for m in methods if m != "semantic")
            embed_stats["semantic_skipped"] = True
    for method in methods:
        if len(alive) == 0:
            break
        if method == "exact":
            res = run_exact(texts, alive, cfg, timer, pinned[alive])
        elif method == "near":
            res = run_near(texts, alive, cfg, timer, pinned[alive])
        else:
            res, near_sub, stats = run_semantic(texts, alive, cfg, timer, cache=cache, progress=progress,
                                                pinned=pinned[alive])
            embed_stats = {**stats, **embed_stats}
            if warning := separation_warning(res.stats, cfg.threshold):
                embed_stats["warnings"] = [*embed_stats.get("warnings", []), warning]
            nearest = np.full(len(texts), np.nan, dtype=np.float32)
            nearest[alive] = near_sub
        results.append(res)
        pinned[res.kept_id] = True
        alive = np.setdiff1d(alive, res.removed, assume_unique=True)
    return results, nearest, embed_stats
