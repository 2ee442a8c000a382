"""`datasets` save_to_disk directories, and Hub datasets read through the same path."""

from __future__ import annotations

import polars as pl

from dataprep.sources import iter_batches, read_table
from tests.sources.conftest import ROWS


def test_datasets_directory_and_hub_share_one_path(tmp_path, monkeypatch):
    import datasets

    ds = datasets.Dataset.from_list(ROWS)
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(tmp_path / "dd")
    from_disk = read_table(str(tmp_path / "dd"))
    assert from_disk.rows() == [tuple(r.values()) for r in ROWS]
    assert read_table(str(tmp_path / "dd"), split="test").height == 1
    calls = []

    def fake_load_dataset(name, split=None):
        calls.append((name, split))
        return datasets.load_from_disk(str(tmp_path / "dd"))[split]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert pl.concat(iter_batches(["hub:me/alpaca-mini:train"])).drop("source", "row").equals(from_disk)
    assert calls == [("me/alpaca-mini", "train")]
    assert pl.concat(iter_batches(["hub:me/alpaca-mini:train"]))["source"][0] == "hub:me/alpaca-mini:train"
