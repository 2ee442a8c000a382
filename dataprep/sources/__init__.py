"""Input sources: any supported file, directory or Hub id → polars frames.

`read_table(path, ...)` reads one source whole (its format told by the suffix); `iter_batches(paths, ...)`
yields the rows of several sources in bounded batches, each row with its `source` and `row`.

Modules, one per format family:
  decoding.py  bytes to text (gunzip; the given, UTF-8 or detected encoding), shared by the readers
  json.py      JSON arrays, JSON Lines, plain .txt (one row per line); `frame_from_rows`
  csv.py       CSV/TSV with delimiter and encoding detection, read whole or scanned in batches
  tables.py    Parquet batches, `datasets` save_to_disk directories
  hub.py       `hub:NAME[:split]` through `datasets.load_dataset`
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dataprep.errors import DataprepError, first_line
from dataprep.sources.csv import csv_batches, read_csv
from dataprep.sources.decoding import open_gzip
from dataprep.sources.hub import read_hub
from dataprep.sources.json import frame_from_rows, read_json, read_json_lines, read_lines
from dataprep.sources.tables import parquet_batches, read_saved_dataset

__all__ = ["HUB_PREFIX", "frame_from_rows", "iter_batches", "read_table"]

HUB_PREFIX = "hub:"


def read_table(
    path: str,
    *,
    delimiter: str | None = None,
    encoding: str | None = None,
    has_header: bool = True,
    quote_char: str | None = "auto",
    split: str | None = None,
):
    """Read one source into a polars frame (no provenance columns).

    CSV/TSV (delimiter and encoding detected unless given; `quote_char` "auto" is `"` for
    CSV and none for .tsv files, None turns quoting off), JSON array, JSONL, plain text
    (.txt: one row per line, column `text`), gzip of any of these, Parquet, a `datasets`
    save_to_disk directory, or `hub:NAME[:split]`.
    """
    import polars as pl

    if path.startswith(HUB_PREFIX):
        return read_hub(path[len(HUB_PREFIX):], split)
    p = Path(path)
    if p.is_dir():
        return read_saved_dataset(p, split)
    name = p.name.lower().removesuffix(".gz")
    raw_opener = open_gzip if p.name.lower().endswith(".gz") else None
    try:
        if name.endswith(".parquet"):
            return pl.read_parquet(p)
        if name.endswith((".jsonl", ".ndjson")):
            return read_json_lines(p, raw_opener, encoding)
        if name.endswith(".json"):
            return read_json(p, raw_opener, encoding)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataprepError(f"cannot read {path}: {first_line(exc)}; check that the file is complete and in that format") from None
    if name.endswith(".txt"):
        return read_lines(p, raw_opener, encoding)
    if name.endswith((".csv", ".tsv", ".tab")):
        return read_csv(p, delimiter=delimiter, encoding=encoding, has_header=has_header,
                        quote_char=quote_char, gz=raw_opener is not None)
    raise DataprepError(
        f"cannot tell the format of {path}; use one of .csv .tsv .json .jsonl .txt .parquet (optionally .gz) or a datasets directory"
    )


def source_name(path: str) -> str:
    """How records name their source: the path as given, normalised (`./ko.json` is `ko.json`), or the Hub id."""
    return path if path.startswith(HUB_PREFIX) else os.path.normpath(path)


def iter_batches(paths: list[str], batch_rows: int = 50_000, **options: Any) -> Iterator:
    """Yield the rows of several sources as polars frames of at most `batch_rows` rows, each row with
    its `source` (as given) and 0-based `row` within that source. Options go to `read_table`
    (delimiter, encoding, has_header, quote_char, split). UTF-8 CSV/TSV files and Parquet are scanned in
    batches, so memory stays bounded whatever the file size; other formats are read whole, then sliced.
    A missing source raises DataprepError before the first batch.
    """
    import polars as pl

    if not paths:
        raise DataprepError("no input given; pass one or more files, directories or hub:NAME ids")
    for p in paths:
        if not p.startswith(HUB_PREFIX) and not Path(p).exists():
            raise DataprepError(f"input {p} does not exist; check the path")
    for p in paths:
        offset = 0
        for batch in _source_batches(p, batch_rows, **options):
            batch = batch.rename({c: f"input_{c}" for c in ("source", "row") if c in batch.columns})  # ours follow
            yield batch.with_columns(source=pl.lit(source_name(p)),
                                     row=pl.int_range(offset, offset + pl.len(), dtype=pl.Int64))
            offset += batch.height


def _source_batches(path: str, batch_rows: int, **options: Any) -> Iterator:
    p = Path(path)
    name = p.name.lower()
    if not path.startswith(HUB_PREFIX) and p.is_file() and name.endswith((".csv", ".tsv", ".tab")):
        yield from csv_batches(p, batch_rows, delimiter=options.get("delimiter"), encoding=options.get("encoding"),
                               has_header=options.get("has_header", True), quote_char=options.get("quote_char", "auto"))
    elif not path.startswith(HUB_PREFIX) and p.is_file() and name.endswith(".parquet"):
        yield from parquet_batches(path, batch_rows)
    else:
        yield from read_table(path, **options).iter_slices(batch_rows)
