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
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise _json_error(path, exc, lineno) from None
    return rows


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
    columns = []
    for name in names:
        values = [r.get(name) for r in rows]
        if all(v is None or isinstance(v, str) for v in values):
            columns.append(pl.Series(name, values, dtype=pl.String))
        else:
            columns.append(pl.Series(name, values, dtype=pl.Object))
    return pl.DataFrame(columns, height=len(rows)) if columns else pl.DataFrame(height=len(rows))


def read_lines(path: Path, opener, encoding: str | None):
    """A plain text file: one row per line, in a `text` column (blank lines are kept, and rejected later)."""
    import polars as pl

    text = decode(_read_bytes(path, opener), path, encoding)
    return pl.DataFrame({"text": text.splitlines()}, schema={"text": pl.String})
