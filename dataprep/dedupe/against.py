"""Decontamination: `dedupe IN --against EVAL... -o OUT` removes the training rows that match a row
of an evaluation set, and never touches (or writes) the evaluation rows.

Methods, run in the order given, each on the training rows the previous ones kept:
- exact: equal text after normalisation (NFKC, case-fold, whitespace collapsed);
- ngram: a word n-gram (13 by default) shared with an eval row, after normalisation with
  punctuation removed; the score is the share of that eval row's n-grams found in the training row
  (`--min-overlap` raises the bar from "any shared n-gram", the rule of GPT-3 and datatrove).
  Eval rows with fewer words than one n-gram are checked by exact only, and counted;
- near: MinHash candidates between the two sets, each checked with its true Jaccard;
- semantic: cosine of the embeddings, at `--threshold`.
Every removed row records the eval row it matched: its source, row number and text.

The n-gram method is vectorised: every word is hashed once, the n-gram hashes of all training rows
are rolled over one concatenated array, and looked up in the sorted eval hashes.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dataprep.dedupe.exact import normalize_text
from dataprep.errors import DataprepError

AGAINST_METHODS = ("exact", "ngram", "near", "semantic")
DEFAULT_AGAINST_METHODS = ("exact", "ngram")
_WORD = re.compile(r"\w+")
_PRIME = np.uint64(1099511628211)
MAX_SHOWN = 50  # hits shown per method in the HTML report


@dataclass
class EvalSet:
    """The eval rows' texts, with where each came from."""

    texts: list[str]
    source: list[str]
    row: list[int]
    files: list[str]  # data files read (for the fingerprint)
    on: dict[str, list[str]] = field(default_factory=dict)  # per eval input: the fields compared


@dataclass
class Hits:
    """Training rows one method removed, each with the eval row it matched and the score."""

    method: str
    train: np.ndarray  # training row ids (0-based positions in the input)
    eval: np.ndarray  # eval row positions in EvalSet
    score: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- reading the eval sets


def read_eval(paths: tuple[str, ...], on: tuple[str, ...] | None) -> EvalSet:
    """The texts of every eval input: dataprep records (the kind's text, or `on`), or any source
    convert reads (the `on` columns, else every text column joined)."""
    from dataprep.dedupe.stage import record_texts, text_fields
    from dataprep.io import read_records
    from dataprep.sources import iter_batches, source_name

    texts, sources, rows, files, used = [], [], [], [], {}
    for path in paths:
        if not Path(path).exists():
            raise DataprepError(f"--against {path} does not exist; check the path")
        records = _records_file(path)
        if records is not None:
            from dataprep.stage import scan_records

            data, _, kind, columns = scan_records(records, "decontaminate against")
            fields = text_fields(columns, kind, on)
            frame = read_records(data)
            batch_texts = record_texts(frame, fields)
            src = frame.get_column("source").to_list() if "source" in frame.columns else [source_name(path)] * frame.height
            row = frame.get_column("row").to_list() if "row" in frame.columns else list(range(frame.height))
            files.append(str(data))
        else:
            batch_texts, src, row, fields = [], [], [], None
            for batch in iter_batches([path]):
                fields = fields or _raw_fields(batch, on, path)
                batch_texts += record_texts(batch, fields)
                src += batch.get_column("source").to_list()
                row += batch.get_column("row").to_list()
            files.append(path)
        used[path] = list(fields or ())
        texts += batch_texts
        sources += src
        rows += row
    if not any(t.strip() for t in texts):
        raise DataprepError(f"--against {', '.join(paths)} has no text to compare; check the file or pass --against-on")
    return EvalSet(texts, sources, [int(r) for r in rows], files, used)


def _records_file(path: str) -> Path | None:
    """The records file of a dataprep stage output (a directory with records.parquet, or a parquet file with a
    manifest beside it); None for a raw source."""
    p = Path(path)
    if p.is_dir() and (p / "records.parquet").exists():
        return p / "records.parquet"
    if p.is_file() and p.suffix == ".parquet" and (p.parent / "manifest.json").exists():
        return p
    return None


def _raw_fields(batch, on: tuple[str, ...] | None, path: str) -> tuple[str, ...]:
    import polars as pl

    columns = [c for c in batch.columns if c not in ("source", "row")]
    if on:
        missing = [c for c in on if c not in columns]
        if missing:
            raise DataprepError(f"--against-on {', '.join(missing)} not in {path}; its columns are: {', '.join(columns)}")
        return tuple(on)
    fields = tuple(c for c in columns if batch.schema[c] == pl.String)
    if not fields:
        raise DataprepError(f"{path} has no text column to compare (columns: {', '.join(columns)}); pass --against-on")
    return fields


# ---------------------------------------------------------------- methods


def _digest(text: str) -> bytes:
    return hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=16).digest()


def exact_hits(train: list[str], alive: np.ndarray, ev: EvalSet) -> Hits:
    first: dict[bytes, int] = {}
    for j, t in enumerate(ev.texts):
        if t.strip():
            first.setdefault(_digest(t), j)
    pairs = [(i, first[h]) for i in alive.tolist() if (h := _digest(train[i])) in first]
    return _hits("exact", pairs, [1.0] * len(pairs))


def words(text: str) -> list[str]:
    """The normalised words an n-gram is made of: NFKC, case-folded, runs of word characters (`\\w`: letters,
    digits, underscore); punctuation and spaces separate them."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def word_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit hash of every word of every text, concatenated; offsets: text i's words are [offsets[i],
    offsets[i+1])). Python's own str hash (SipHash): salted per process, so hashes never leave it."""
    per_text = [list(map(hash, _WORD.findall(unicodedata.normalize("NFKC", t).casefold()))) for t in texts]
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum([len(h) for h in per_text], out=offsets[1:])
    flat = np.fromiter(itertools.chain.from_iterable(per_text), dtype=np.int64, count=int(offsets[-1]))
    return flat.view(np.uint64), offsets


def ngram_hashes(units: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hash of every n-word window that lies inside one text, the text it belongs to)."""
    if len(units) < n:
        return np.empty(0, np.uint64), np.empty(0, np.int64)
    m = len(units) - n + 1
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            h = h * _PRIME + units[k : k + m]
        h ^= h >> np.uint64(33)  # murmur3's finaliser: every bit of the n-gram reaches the low bits
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
    doc_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    inside = doc_of[n - 1 :] == doc_of[:m]
    return h[inside], doc_of[:m][inside]


class GramIndex:
    """The distinct n-grams of the eval rows, sorted, with the rows that own each, and a bit table of
    their low bits that rules out most non-members with one lookup."""

    def __init__(self, texts: list[str], n: int, table_bits: int = 26):
        eh, ed = ngram_hashes(*word_hashes(texts), n)
        order = np.lexsort((ed, eh))
        eh, ed = eh[order], ed[order]
        keep = np.concatenate([[True], (eh[1:] != eh[:-1]) | (ed[1:] != ed[:-1])]) if len(eh) else np.zeros(0, bool)
        self.grams, self.owner = eh[keep], ed[keep]  # sorted by hash; a hash may belong to several eval rows
        self.per_row = np.bincount(self.owner, minlength=len(texts))  # distinct n-grams of each eval row
        self.uniq, self.first = np.unique(self.grams, return_index=True)
        self.count = np.diff(np.append(self.first, len(self.grams)))
        self.mask = np.uint64((1 << table_bits) - 1)
        self.table = np.zeros(1 << table_bits, dtype=bool)
        self.table[(self.uniq & self.mask).astype(np.int64)] = True

    def find(self, hashes: np.ndarray) -> np.ndarray:
        """Index into `uniq` of each hash, or -1 where it is no eval n-gram."""
        out = np.full(len(hashes), -1, dtype=np.int64)
        maybe = np.flatnonzero(self.table[(hashes & self.mask).astype(np.int64)])
        if len(maybe) and len(self.uniq):
            pos = np.minimum(np.searchsorted(self.uniq, hashes[maybe]), len(self.uniq) - 1)
            hit = self.uniq[pos] == hashes[maybe]
            out[maybe[hit]] = pos[hit]
        return out


def ngram_hits(train: list[str], alive: np.ndarray, ev: EvalSet, n: int, min_overlap: float,
               chunk: int = 20_000) -> Hits:
    """Training rows sharing a word n-gram with an eval row; the score is the share of the best-matching
    eval row's distinct n-grams found in the training row."""
    index = GramIndex(ev.texts, n)
    short = int(sum(1 for t in ev.texts if 0 < len(words(t)) < n))
    train_pairs, scores = [], []
    for start in range(0, len(alive), chunk):
        ids = alive[start : start + chunk]
        th, td = ngram_hashes(*word_hashes([train[i] for i in ids]), n)
        pos = index.find(th)
        hit = pos >= 0
        if not hit.any():
            continue
        td, pos = td[hit], pos[hit]
        # each hit n-gram, once per eval row owning it: (training row, eval row, n-gram)
        reps = index.count[pos]
        idx = np.repeat(index.first[pos], reps) + (np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps))
        t_doc, e_row, gram = np.repeat(td, reps), index.owner[idx], index.grams[idx]
        order = np.lexsort((gram, e_row, t_doc))
        t_doc, e_row, gram = t_doc[order], e_row[order], gram[order]
        new_pair = np.concatenate([[True], (t_doc[1:] != t_doc[:-1]) | (e_row[1:] != e_row[:-1])])
        distinct = new_pair | np.concatenate([[True], gram[1:] != gram[:-1]])
        pair_at = np.flatnonzero(new_pair)
        shared = np.add.reduceat(distinct.astype(np.int64), pair_at)
        t_doc, e_row = t_doc[pair_at], e_row[pair_at]
        overlap = shared / np.maximum(index.per_row[e_row], 1)
        best = np.lexsort((e_row, -overlap, t_doc))  # per training row: the highest overlap, then the first eval row
        t_doc, e_row, overlap = t_doc[best], e_row[best], overlap[best]
        first = np.concatenate([[True], t_doc[1:] != t_doc[:-1]])
        keep = first & (overlap >= min_overlap)
        train_pairs += list(zip(ids[t_doc[keep]].tolist(), e_row[keep].tolist(), strict=True))
        scores += overlap[keep].tolist()
    return _hits("ngram", train_pairs, scores, {"ngram": n, "min_overlap": min_overlap, "eval_rows_too_short": short})


def near_hits(train: list[str], alive: np.ndarray, ev: EvalSet, cfg) -> Hits:
    """MinHash candidates over both sets; only pairs across them count, each checked with its true Jaccard."""
    from dataprep.dedupe.minhash import near_pairs

    texts = [train[i] for i in alive] + ev.texts
    res = near_pairs(texts, cfg.near_threshold, ngram=cfg.ngram, unit=cfg.ngram_unit, num_perm=cfg.num_perm)
    m = len(alive)
    a, b, s = res.a, res.b, res.score
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    cross = (lo < m) & (hi >= m)
    return _best("near", alive[lo[cross]], hi[cross] - m, s[cross], {"threshold": cfg.near_threshold})


def semantic_hits(train: list[str], alive: np.ndarray, ev: EvalSet, cfg, *, cache: bool, progress: bool,
                  block: int = 8192) -> Hits:
    """The nearest eval row of each training row by cosine; a hit at or above the threshold."""
    from dataprep.embed import embed_texts, load_encoder

    encoder = load_encoder(cfg.model, cfg.device, workers=cfg.embed_workers)
    try:
        e = np.asarray(embed_texts(ev.texts, encoder, batch_size=cfg.batch_size, use_cache=cache, progress=False),
                       dtype=np.float32)
        t = np.asarray(embed_texts([train[i] for i in alive], encoder, batch_size=cfg.batch_size, use_cache=cache,
                                   progress=progress), dtype=np.float32)
    finally:
        encoder.close()  # worker processes and model copies: stopped, their memory given back, even on an error
    best, arg = np.empty(len(t), np.float32), np.empty(len(t), np.int64)
    for s in range(0, len(t), block):
        sims = t[s : s + block] @ e.T
        arg[s : s + block] = sims.argmax(axis=1)
        best[s : s + block] = sims[np.arange(len(sims)), arg[s : s + block]]
    ok = best >= cfg.threshold
    return _hits("semantic", list(zip(alive[ok].tolist(), arg[ok].tolist(), strict=True)), best[ok].tolist(),
                 {"threshold": cfg.threshold, "model": cfg.model, "device": encoder.device})


def _best(method: str, train: np.ndarray, ev: np.ndarray, score: np.ndarray, stats: dict) -> Hits:
    """One hit per training row: its highest-scoring eval row (the first on ties)."""
    order = np.lexsort((ev, -score, train))
    train, ev, score = train[order], ev[order], score[order]
    first = np.concatenate([[True], train[1:] != train[:-1]]) if len(train) else np.zeros(0, bool)
    return Hits(method, train[first].astype(np.int64), ev[first].astype(np.int64), score[first].astype(np.float32),
                stats)


def _hits(method: str, pairs: list[tuple[int, int]], scores: list[float], stats: dict | None = None) -> Hits:
    train = np.array([p[0] for p in pairs], dtype=np.int64)
    ev = np.array([p[1] for p in pairs], dtype=np.int64)
    return Hits(method, train, ev, np.array(scores, dtype=np.float32), stats or {})


def decontaminate(train: list[str], ev: EvalSet, cfg, timer, *, cache: bool = True, progress: bool = False) -> list[Hits]:
    """Run the methods in order, each on the training rows the previous ones kept."""
    alive = np.arange(len(train))
    results = []
    for method in cfg.methods:
        with timer(method):
            if method == "exact":
                hits = exact_hits(train, alive, ev)
            elif method == "ngram":
                hits = ngram_hits(train, alive, ev, cfg.against_ngram, cfg.min_overlap)
            elif method == "near":
                hits = near_hits(train, alive, ev, cfg)
            else:
                hits = semantic_hits(train, alive, ev, cfg, cache=cache, progress=progress)
        results.append(hits)
        alive = np.setdiff1d(alive, hits.train, assume_unique=True)
    return results


# ---------------------------------------------------------------- outputs


def removed_frame(frame, results: list[Hits], ev: EvalSet):
    """Each removed training row with its id, method, score and the eval row it matched."""
    import polars as pl

    extra = ("id", "method", "score", "eval_source", "eval_row", "eval_text")
    names = {c: (f"decon_{c}" if c in frame.columns else c) for c in extra}
    ids = np.concatenate([h.train for h in results]) if results else np.empty(0, np.int64)
    ev_ids = np.concatenate([h.eval for h in results]).tolist() if results else []
    cols = pl.DataFrame(
        {
            names["id"]: ids,
            names["method"]: [h.method for h in results for _ in h.train],
            names["score"]: (np.concatenate([h.score for h in results]) if results else np.empty(0, np.float32)),
            names["eval_source"]: [ev.source[j] for j in ev_ids],
            names["eval_row"]: [ev.row[j] for j in ev_ids],
            names["eval_text"]: [ev.texts[j] for j in ev_ids],
        },
        schema={names["id"]: pl.Int64, names["method"]: pl.String, names["score"]: pl.Float32,
                names["eval_source"]: pl.String, names["eval_row"]: pl.Int64, names["eval_text"]: pl.String},
    )
    rows = frame[ids.tolist()] if len(ids) else frame.clear()
    return pl.concat([rows, cols], how="horizontal").sort(names["id"])


def build_report(n_in: int, ev: EvalSet, results: list[Hits], cfg, fields, timer) -> dict[str, Any]:
    methods = {h.method: {"removed": int(len(h.train)), **h.stats} for h in results}
    n_removed = sum(m["removed"] for m in methods.values())
    return {"rows_in": n_in, "kept": n_in - n_removed, "removed": n_removed, "on": list(fields),
            "against": {"inputs": list(ev.on), "rows": len(ev.texts), "on": ev.on}, "methods": methods,
            "timings": dict(timer.seconds)}


def render_html(report: dict[str, Any], train: list[str], ev: EvalSet, results: list[Hits]) -> str:
    from dataprep.dedupe.report import CSS, _clip

    summary = "".join(f"<tr><td>{m}</td><td>{v['removed']}</td><td>{html.escape(_stats_line(v))}</td></tr>"
                      for m, v in report["methods"].items())
    sections = []
    for h in results:
        rows = "".join(
            f"<tr><td>{i}</td><td>{html.escape(_clip(train[i]))}</td><td>{s:.3f}</td>"
            f"<td>{html.escape(ev.source[j])}:{ev.row[j]}</td><td>{html.escape(_clip(ev.texts[j]))}</td></tr>"
            for i, j, s in list(zip(h.train.tolist(), h.eval.tolist(), h.score.tolist(), strict=True))[:MAX_SHOWN]
        )
        more = f"<p class='meta'>first {MAX_SHOWN} of {len(h.train)}; all are in removed.parquet</p>" if len(h.train) > MAX_SHOWN else ""
        sections.append(f"<h2>{h.method}: {len(h.train)} removed</h2>" + (
            f"<table><tr><th>row</th><th>training text</th><th>score</th><th>eval row</th><th>eval text</th></tr>"
            f"{rows}</table>{more}" if len(h.train) else "<p class='meta'>none</p>"))
    inputs = ", ".join(html.escape(p) for p in report["against"]["inputs"])
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>dataprep decontamination report</title>
<style>{CSS}</style></head><body>
<h1>dataprep dedupe --against</h1>
<p id="counts">in {report['rows_in']} = kept {report['kept']} + removed {report['removed']} ·
compared: {html.escape(' + '.join(report['on']))} · against {report['against']['rows']} eval rows of {inputs}</p>
<table><tr><th>method</th><th>removed</th><th>settings</th></tr>{summary}</table>
{''.join(sections)}
</body></html>
"""


def _stats_line(stats: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in stats.items() if k != "removed")
