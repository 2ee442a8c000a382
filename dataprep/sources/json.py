"""JSON arrays, JSON Lines and plain text (.txt, one row per line), each optionally gzipped;
`frame_from_rows` turns JSON objects into a frame that keeps wrongly typed values visible."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dataprep.errors import DataprepError
from dataprep.sources.decoding import decode


def _read_bytes(path: Path, opener) -> bytes:
    return opener(path) if opener else path.read_bytes()


def _json_error(path: Path, exc: json.JSONDecodeError, line: int | None = None) -> DataprepError:
    return DataprepError(
        f"{path} is not valid JSON at line {line or exc.lineno}, column {exc.colno}: {exc.msg}; fix or remove that line"
    )


def read_json(path: Path, opener, encoding: str | None = None):
    text = decode(_read_bytes(path, opener), path, encoding)
    stripped = text.lstrip()
    if stripped and stripped[0] == "{" and "\n" in stripped.strip():
        # several objects, one per line: JSON Lines with a .json suffix
        try:
            json.loads(stripped)
        except json.JSONDecodeError:
            return frame_from_rows(_parse_json_lines(text, path), path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _json_error(path, exc) from None
    except RecursionError:
        raise _too_deep(path) from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise DataprepError(f"{path} holds a JSON {type(data).__name__}; expected an array of objects or JSON Lines")
    return frame_from_rows(data, path)


def read_json_lines(path: Path, opener, encoding: str | None = None):
    text = decode(_read_bytes(path, opener), path, encoding)
    return frame_from_rows(_parse_json_lines(text, path), path)


def _parse_json_lines(text: str, path: Path) -> list:
    rows = []
    for lineno, line in enumerate(lines(text), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise _json_error(path, exc, lineno) from None
            except RecursionError:
                raise _too_deep(path, lineno) from None
    return rows


def lines(text: str) -> list[str]:
    """The lines of a text file, split at \\n and \\r\\n only: U+2028, U+2029, U+0085 and form feeds
    are characters inside a line (JSON writes them unescaped), not line ends."""
    parts = text.split("\n")
    if parts and parts[-1] == "":
        parts.pop()
    return [p.removesuffix("\r") for p in parts]


def _too_deep(path: Path, line: int | None = None) -> DataprepError:
    where = f" at line {line}" if line else ""
    return DataprepError(f"{path}{where} nests JSON deeper than the parser allows (about 1,000 levels); "
                         "flatten that value or remove the row")


INVALID_UNICODE = "__invalid_unicode__"  # marks rows whose strings cannot be stored (lone surrogates)


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def frame_from_rows(rows: list, path: str | os.PathLike = "rows"):
    """Column-wise frame from dicts (JSON objects). All-string columns are String; any other column keeps
    the Python values as an Object column, so a wrong type is still visible (and rejected) per row later.
    `path` only names the rows in errors."""
    import polars as pl

    names: dict[str, None] = {}
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise DataprepError(f"{path} row {i} is a JSON {type(r).__name__}, not an object; each row must be an object")
        names.update(dict.fromkeys(r))
    columns, invalid = [], set()
    for name in names:
        values = [r.get(name) for r in rows]
        if all(v is None or isinstance(v, str) for v in values):
            try:
                columns.append(pl.Series(name, values, dtype=pl.String))
            except UnicodeEncodeError:  # a lone surrogate ("\ud800"): that row is rejected, not the run
                bad = {i for i, v in enumerate(values) if isinstance(v, str) and not _encodable(v)}
                invalid |= bad
                columns.append(pl.Series(name, [None if i in bad else v for i, v in enumerate(values)], dtype=pl.String))
        else:
            columns.append(pl.Series(name, values, dtype=pl.Object))
    if invalid:
        columns.append(pl.Series(INVALID_UNICODE, [i in invalid for i in range(len(rows))], dtype=pl.Boolean))
    return pl.DataFrame(columns, height=len(rows)) if columns else pl.DataFrame(height=len(rows))


def read_lines(path: Path, opener, encoding: str | None):
    """A plain text file: one row per line, in a `text` column (blank lines are kept, and rejected later)."""
    import polars as pl

    text = decode(_read_bytes(path, opener), path, encoding)
    return pl.DataFrame({"text": lines(text)}, schema={"text": pl.String})
