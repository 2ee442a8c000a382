"""Length filter: min/max characters, words, tokens (with a tokenizer) or turns, per field.

A row fails on the first bound it breaks, in the order chars, words, tokens, turns and min before
max, field by field; its reason is `FIELD UNIT < N` or `FIELD UNIT > N` and its score the count.
Words are whitespace-separated; turns are a chat field's non-empty turns (1 for any other
non-empty field); tokens are the tokenizer's ids without special tokens.
"""

from __future__ import annotations

import numpy as np

from dataprep.filter.fields import FilterResult, field_values, per_field

UNITS = ("chars", "words", "tokens", "turns")


def _counts(values, unit: str, tokenizer=None) -> np.ndarray:
    from dataprep.filter.fields import as_text

    if unit == "turns":
        return np.array([sum(1 for t in v if t.strip()) if isinstance(v, list) else int(bool(v.strip()))
                         for v in values], dtype=np.float64)
    texts = [as_text(v) for v in values]
    if unit == "chars":
        return np.fromiter((len(t) for t in texts), dtype=np.float64, count=len(texts))
    if unit == "words":
        return np.fromiter((len(t.split()) for t in texts), dtype=np.float64, count=len(texts))
    out = np.zeros(len(texts), dtype=np.float64)
    for start in range(0, len(texts), 4096):
        enc = tokenizer(texts[start:start + 4096], add_special_tokens=False)["input_ids"]
        out[start:start + len(enc)] = [len(e) for e in enc]
    return out


def length_filter(frame, kind: str | None, bounds: dict[str, tuple[dict, dict]], tokenizer=None) -> FilterResult:
    """`bounds`: unit -> ({field: min}, {field: max}). Pure: the frame's rows in, one result per row."""
    n = frame.height
    reason = np.full(n, None, dtype=object)
    detail = np.full(n, None, dtype=object)
    score = np.full(n, np.nan)
    margin = np.full(n, np.inf)
    cache: dict[str, list] = {}
    for unit in UNITS:
        lo, hi = bounds.get(unit, ({}, {}))
        for fname in dict.fromkeys([*lo, *hi]):
            values = cache.setdefault(fname, field_values(frame, kind, fname))
            counts = _counts(values, unit, tokenizer)
            for bound, word in ((lo.get(fname), "<"), (hi.get(fname), ">")):
                if bound is None:
                    continue
                alive = reason == None  # noqa: E711 (element-wise)
                bad = alive & ((counts < bound) if word == "<" else (counts > bound))
                reason[bad] = f"{fname} {unit} {word} {bound:g}"
                inside = np.abs(counts - bound) / max(bound, 1.0)
                decide = bad | (alive & ~bad & (inside < margin))  # failing, or the closest call so far
                score[decide] = counts[decide]
                detail[decide] = f"{fname} {unit}"
                margin = np.where(alive & ~bad, np.minimum(margin, inside), margin)
    alive = reason == None  # noqa: E711
    return FilterResult(reason.tolist(), score, detail.tolist(), np.where(alive & np.isfinite(margin), margin, np.nan))


def length_bounds(cfg, fields) -> dict[str, tuple[dict, dict]]:
    from dataprep.filter.fields import parse_spec

    out = {}
    for unit in UNITS:
        lo = per_field(parse_spec(getattr(cfg, f"min_{unit}"), f"--min-{unit}"), fields)
        hi = per_field(parse_spec(getattr(cfg, f"max_{unit}"), f"--max-{unit}"), fields)
        if lo or hi:
            out[unit] = (lo, hi)
    return out
