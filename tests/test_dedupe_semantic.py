"""Semantic dedupe with the real packaged MiniLM on real data (slow: loads the model)."""

from __future__ import annotations

import json

import polars as pl
import pytest

from dataprep import dedupe as dd
from tests.test_dedupe import alpaca_frame

N_ROWS = 120  # small: MiniLM on 2 shared cores embeds a few rows a second
# planted row -> the original instruction it paraphrases (written for this test)
PARAPHRASES = {
    9: "Describe how birds differ from mammals.",
    24: "Name two sources of renewable energy.",
    26: "What are the advantages of exercising?",
}


@pytest.mark.slow
def test_planted_paraphrases_found_by_semantic_and_cache_reused(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("DATAPREP_CACHE", str(tmp_path / "cache"))
    frame = alpaca_frame(shared_data, N_ROWS)
    rows = frame.to_dicts()
    plants = [dict(rows[i], instruction=text) for i, text in PARAPHRASES.items()]
    plants.append(dict(rows[3], instruction="  " + rows[3]["instruction"].upper()))  # exact, not semantic
    path = tmp_path / "in.parquet"
    pl.concat([frame, pl.DataFrame(plants, schema=frame.schema)]).write_parquet(path)

    out = tmp_path / "out"
    manifest = dd.dedupe(path, out, on=("instruction",), device="cpu")
    removed = pl.read_parquet(out / "removed.parquet")
    planted = removed.filter(pl.col("id") >= N_ROWS).sort("id")
    assert planted.select("id", "kept_id", "method").rows() == [
        (N_ROWS, 9, "semantic"), (N_ROWS + 1, 24, "semantic"), (N_ROWS + 2, 26, "semantic"), (N_ROWS + 3, 3, "exact")
    ]
    assert (planted["score"][:3] >= dd.DEFAULT_THRESHOLD).all()
    assert removed.filter(pl.col("id") < N_ROWS).height == 0  # no original row is removed
    assert manifest.counts.n_in == N_ROWS + 4 and manifest.counts.n_out == N_ROWS
    report = json.loads((out / "report.json").read_text())
    sem = report["methods"]["semantic"]
    assert sem["embedded"] == N_ROWS + 3 and sem["cached"] == 0  # what exact and near kept
    assert set(report["timings"]) >= {"embed", "search", "group"}

    # another threshold: nothing is embedded again, and a lower threshold removes at least as much
    lower = dd.dedupe(path, tmp_path / "out2", on=("instruction",), device="cpu", threshold=0.8)
    sem2 = json.loads((tmp_path / "out2" / "report.json").read_text())["methods"]["semantic"]
    assert sem2["embedded"] == 0 and sem2["cached"] == N_ROWS + 3
    assert lower.counts.rejected >= manifest.counts.rejected
