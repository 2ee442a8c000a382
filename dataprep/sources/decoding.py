"""Bytes to text, shared by the readers: gunzip, and decode (with the encoding given, else UTF-8,
else what charset-normalizer detects)."""

from __future__ import annotations

from pathlib import Path

from dataprep.errors import DataprepError, first_line

PREFERRED_ENCODINGS = ("utf_8", "cp949", "cp1252", "latin_1", "iso8859_15")


def open_gzip(path: Path) -> bytes:
    import gzip

    try:
        with gzip.open(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError) as exc:
        raise DataprepError(f"cannot read {path}: not a complete gzip file ({first_line(exc)})") from None


def decode(data: bytes, path: Path, encoding: str | None) -> str:
    """Decode with the given encoding, else UTF-8 (BOM allowed), else what charset-normalizer detects."""
    if encoding:
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise DataprepError(f"cannot decode {path} as {encoding}: {first_line(exc)}; pass the right --encoding") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = best_match(from_bytes(data))
    if best is None:
        raise DataprepError(f"cannot detect the text encoding of {path}; pass --encoding (e.g. cp949, latin-1)")
    return str(best)


def best_match(matches):
    """charset-normalizer's best match; among equally good fits (short samples fit several code pages)
    the common ones win: cp1252 is what "latin-1" files usually are, cp949 is a superset of euc-kr."""
    best = matches.best()
    if best is None:
        return None
    tied = {m.encoding: m for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence)}
    return next((tied[e] for e in PREFERRED_ENCODINGS if e in tied), best)
