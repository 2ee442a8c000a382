"""Exact duplicates: equal hashes of normalised text (Unicode NFKC, case-folded, whitespace collapsed)."""

from __future__ import annotations

import hashlib
import re
import unicodedata

import numpy as np

_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFKC, case-fold, collapse every run of whitespace to one space, strip the ends."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def text_hash(text: str) -> bytes:
    """16-byte hash of the normalised text: equal for exact duplicates."""
    return hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=16).digest()


def exact_pairs(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i, j, score=1.0) linking each row to the first earlier row with the same normalised text.

    A star per hash is enough: grouping takes connected components, and every member of a
    hash class is linked to its first member.
    """
    first: dict[bytes, int] = {}
    a, b = [], []
    for j, text in enumerate(texts):
        i = first.setdefault(text_hash(text), j)
        if i != j:
            a.append(i)
            b.append(j)
    return np.array(a, dtype=np.int64), np.array(b, dtype=np.int64), np.ones(len(a), dtype=np.float32)
