"""The records file: its columns and row count without loading it."""

from __future__ import annotations


def test_record_columns_and_count_without_loading(tmp_path):
    import polars as pl

    from dataprep.io import record_columns, record_count

    frame = pl.DataFrame({"text": ["a", "b", "c"], "row": [0, 1, 2]})
    frame.write_parquet(tmp_path / "r.parquet")
    frame.write_ndjson(tmp_path / "r.jsonl")
    for name in ("r.parquet", "r.jsonl"):
        assert record_columns(tmp_path / name) == ["text", "row"] and record_count(tmp_path / name) == 3
