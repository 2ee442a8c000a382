"""Columnar sources: Parquet scanned in batches, `datasets` save_to_disk directories, and the
conversion of any `datasets` Dataset (or one split of a DatasetDict) to a polars frame."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from dataprep.errors import DataprepError, first_line


def parquet_batches(path: str, batch_rows: int) -> Iterator:
    """A Parquet file scanned in frames of at most `batch_rows` rows."""
    import polars as pl

    try:
        yield from pl.scan_parquet(Path(path)).collect_batches(chunk_size=batch_rows)
    except pl.exceptions.PolarsError as exc:
        raise DataprepError(f"cannot read {path}: {first_line(exc)}; check that the file is complete") from None


def read_saved_dataset(path: Path, split: str | None):
    import datasets

    if not any((path / f).is_file() for f in ("dataset_info.json", "dataset_dict.json", "state.json")):
        raise DataprepError(f"{path} is a directory but not a datasets save_to_disk directory; pass a file or such a directory")
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises many types for damaged directories
        raise DataprepError(f"cannot load datasets directory {path}: {first_line(exc)}") from None
    return dataset_to_frame(ds, str(path), split)


def dataset_to_frame(ds, what: str, split: str | None):
    """A `datasets` Dataset (or one split of a DatasetDict) as a polars frame."""
    import datasets

    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        splits = list(ds)
        pick = split or ("train" if "train" in ds else splits[0] if len(splits) == 1 else None)
        if pick not in ds:
            raise DataprepError(f"{what} has splits {', '.join(splits)}; name one, e.g. {what}:{splits[0]}")
        ds = ds[pick]
    return ds.to_polars()
