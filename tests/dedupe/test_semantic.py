"""Semantic dedupe with the real packaged MiniLM on real data (slow: loads the model)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from dataprep import dedupe as dd
from tests.dedupe.test_dedupe import alpaca_frame, check_removals

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
    check_removals(path, out, {"exact": 1.0, "near": 0.8, "semantic": dd.DEFAULT_THRESHOLD})
    assert not any("nearest-neighbour" in w or "does not read" in w for w in manifest.get("warnings"))
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


@pytest.mark.slow
def test_korean_under_english_minilm_is_refused_or_removes_only_direct_pairs(shared_data, tmp_path, monkeypatch):
    """The issue's data: ko_alpaca_1040 under the English MiniLM once lost 734 of 1040 rows by chaining."""
    from dataprep.convert import convert
    from dataprep.embed import embed_texts, load_encoder
    from dataprep.errors import DataprepError

    monkeypatch.setenv("DATAPREP_CACHE", str(tmp_path / "cache"))
    ko = tmp_path / "ko"
    convert([str(shared_data / "ko_alpaca_1040.json")], str(ko), kind="sft", template="ko-alpaca")
    with pytest.raises(DataprepError, match=r"semantic dedupe refused: 1019 of 1040 texts \(98.0%\) are in Hangul"):
        dd.dedupe(ko, tmp_path / "refused", methods=("exact", "near", "semantic"), device="cpu")
    assert not (tmp_path / "refused").exists()

    out = tmp_path / "forced"
    manifest = dd.dedupe(ko, out, device="cpu", allow_model_language_mismatch=True)
    warnings = " ".join(manifest.get("warnings"))
    assert "semantic ran although 1019 of 1040 texts" in warnings
    assert "the median nearest-neighbour similarity is 0.8" in warnings  # MiniLM does not separate Korean
    removed = check_removals(ko, out, {"exact": 1.0, "near": 0.8, "semantic": dd.DEFAULT_THRESHOLD})
    # each score is the pair's own cosine (recomputed here from the cached vectors), never a chain's
    texts = dd.record_texts(pl.read_parquet(ko / "records.parquet"), tuple(manifest.get("text_fields")))
    emb = embed_texts(texts, load_encoder("minilm", "cpu"))
    sem = removed.filter(pl.col("method") == "semantic")
    cos = np.einsum("ij,ij->i", emb[sem["id"].to_numpy()], emb[sem["kept_id"].to_numpy()])
    np.testing.assert_allclose(sem["score"].to_numpy(), cos, atol=1e-5)
    assert sem.height < 734  # the chained removals are gone (what is left is MiniLM not reading Korean)
