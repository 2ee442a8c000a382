"""dedupe without a real model: exact and near methods, groups and keep rules, outputs, bad input.

Semantic orchestration (centroid, sweep) is tested here with a tiny deterministic fake encoder;
the real MiniLM runs in tests/dedupe/test_semantic.py (slow).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from itertools import combinations
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dataprep import dedupe as dd
from dataprep.cli import cli
from dataprep.dedupe.exact import exact_pairs, normalize_text
from dataprep.dedupe.groups import group_and_keep
from dataprep.dedupe.minhash import near_pairs, optimal_bands
from dataprep.dedupe.semantic import cluster_pairs, semantic_pairs
from dataprep.errors import DataprepError

# ---------------------------------------------------------------- helpers


def alpaca_frame(shared_data: Path, n: int | None = None) -> pl.DataFrame:
    rows = json.loads((shared_data / "alpaca_en_demo.json").read_text())[:n]
    return pl.DataFrame(rows).with_columns(
        prompt=pl.col("instruction"),
        completion=pl.col("output"),
        source=pl.lit("alpaca_en_demo.json"),
        row=pl.int_range(pl.len()).cast(pl.Int64),
    )


def char_grams(text: str, n: int = 5) -> set[str]:
    """Reference character n-gram set, written independently of minhash.py."""
    t = normalize_text(text)
    return {t[i : i + n] for i in range(max(1, len(t) - n + 1))} if t else set()


def set_jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def char_jaccard(x: str, y: str) -> float:
    return set_jaccard(char_grams(x), char_grams(y))


def text_table(tmp_path: Path, texts: list[str]) -> Path:
    path = tmp_path / "in.parquet"
    pl.DataFrame({"text": texts}, schema={"text": pl.String}).write_parquet(path)
    return path


# ---------------------------------------------------------------- exact


def test_normalize_text_nfkc_casefold_whitespace():
    assert normalize_text("  Hello\t\n  WORLD  ") == "hello world"
    assert normalize_text("ＨＥＬＬＯ　ｗｏｒｌｄ") == "hello world"  # full-width letters and space (NFKC)
    assert normalize_text("Straße") == normalize_text("STRASSE")  # case-fold, not lower()
    assert normalize_text(" \t ") == ""


def test_exact_pairs_link_each_copy_to_the_first():
    a, b, s = exact_pairs(["Hello world", "x", "hello   WORLD", "", "  ", "ＨＥＬＬＯ world"])
    assert list(zip(a.tolist(), b.tolist(), strict=False)) == [(0, 2), (3, 4), (0, 5)]
    assert s.tolist() == [1.0, 1.0, 1.0]


# ---------------------------------------------------------------- groups and keep rules


def test_chain_is_one_group_but_no_removal_rests_on_it():
    # A~B and B~C but not A~C: one group (reported whole), yet C is not a duplicate of A, so it stays
    for a, b in (([0, 1], [1, 2]), ([1, 0], [2, 1])):
        g = group_and_keep(4, np.array(a), np.array(b), np.array([0.9, 0.95]))
        assert g.labels[0] == g.labels[1] == g.labels[2] != g.labels[3]
        assert g.keeper.tolist() == [0, 0, 2, 3]
        assert g.removed.tolist() == [1]
        assert g.score[1] == pytest.approx(0.9 if a == [0, 1] else 0.95)  # the pair (B, A) itself
        assert g.sizes().tolist() == [3] and g.kept_in_groups() == 2
    # equal texts are transitive: there the whole group is one cluster
    g = group_and_keep(4, np.array([0, 1]), np.array([1, 2]), transitive=True)
    assert g.keeper.tolist() == [0, 0, 0, 3] and g.kept_in_groups() == 1
    # pinned rows (kept by an earlier method for rows it removed) stay, and lead
    g = group_and_keep(4, np.array([0, 0]), np.array([1, 2]), transitive=True, pinned=np.array([0, 1, 1, 0], bool))
    assert g.keeper.tolist() == [1, 1, 2, 3]
    g = group_and_keep(3, np.array([0, 1]), np.array([1, 2]), pinned=np.array([0, 1, 1], bool))
    assert g.keeper.tolist() == [1, 1, 2]


def test_leaders_remove_only_direct_pairs_of_rows_that_stay():
    # a path 0-1-2-3-4 and a star 5-{6,7,8}: leaders in input order are 0, 2, 4 and 5
    a, b = np.array([0, 1, 2, 3, 5, 5, 5]), np.array([1, 2, 3, 4, 6, 7, 8])
    g = group_and_keep(9, a, b)
    assert g.keeper.tolist() == [0, 0, 2, 2, 4, 5, 5, 5, 5]
    pairs = set(zip(a.tolist(), b.tolist(), strict=True)) | set(zip(b.tolist(), a.tolist(), strict=True))
    kept = set(np.flatnonzero(g.keeper == np.arange(9)).tolist())
    for r in g.removed.tolist():  # every removal: a direct pair with a row that stays
        assert (r, int(g.keeper[r])) in pairs and g.keeper[r] in kept
    assert not any((i, j) in pairs for i in kept for j in kept)  # and no two rows that stay are a pair


def test_longest_and_shortest_break_ties_by_input_order():
    a, b = np.array([0, 1, 2]), np.array([1, 2, 3])  # a path 0-1-2-3
    lengths = [3, 7, 7, 1]
    # longest: 1 leads and removes 0 and 2; 3 is a pair only of 2, which went, so it stays
    assert group_and_keep(4, a, b, keep="longest", lengths=lengths).keeper.tolist() == [1, 1, 1, 3]
    # shortest: 3 leads and removes 2, then 0 leads and removes 1
    assert group_and_keep(4, a, b, keep="shortest", lengths=lengths).keeper.tolist() == [0, 0, 3, 3]
    tie = [5, 5, 5, 5]
    assert group_and_keep(4, a, b, keep="longest", lengths=tie).keeper.tolist() == [0, 0, 2, 2]
    assert group_and_keep(4, a, b, keep="shortest", lengths=tie).keeper.tolist() == [0, 0, 2, 2]


def test_random_keep_is_seeded_and_picks_a_member():
    a, b = np.array([0, 0, 1, 4]), np.array([1, 2, 2, 5])  # groups {0,1,2} (all pairs), {3}, {4,5}
    choices = {tuple(group_and_keep(6, a, b, keep="random", seed=s).keeper.tolist()) for s in range(20)}
    for keeper in choices:
        assert keeper[0] == keeper[1] == keeper[2] in (0, 1, 2)
        assert keeper[3] == 3 and keeper[4] == keeper[5] in (4, 5)
    assert len(choices) > 1  # the seed matters
    assert group_and_keep(6, a, b, keep="random", seed=7).keeper.tolist() == list(
        group_and_keep(6, a, b, keep="random", seed=7).keeper
    )


def test_centroid_keeps_the_member_nearest_the_group_mean():
    # mean of the three unit vectors points along (1, 1, 0)/√2 + a bit of z: row 1 is nearest
    emb = np.array([[1.0, 0.0, 0.0], [0.7071, 0.7071, 0.0], [0.0, 1.0, 0.0]])
    g = group_and_keep(3, np.array([0, 1]), np.array([1, 2]), keep="centroid", embeddings=emb)
    assert g.keeper.tolist() == [1, 1, 1]
    # without embeddings: the member with the highest summed pair score (the hub of a star)
    g = group_and_keep(3, np.array([0, 1]), np.array([1, 2]), np.array([0.9, 0.95]), keep="centroid")
    assert g.keeper.tolist() == [1, 1, 1]


def test_no_pairs_and_no_rows():
    assert group_and_keep(3, np.array([], dtype=int), np.array([], dtype=int)).removed.tolist() == []
    assert group_and_keep(0, np.array([], dtype=int), np.array([], dtype=int)).removed.tolist() == []


# ---------------------------------------------------------------- near


def test_optimal_bands_matches_datasketch_rule():
    assert optimal_bands(0.8, 128) == (9, 13)  # datasketch MinHashLSH(threshold=0.8, num_perm=128)
    assert optimal_bands(0.5, 128)[0] * optimal_bands(0.5, 128)[1] <= 128


def test_near_pairs_are_checked_and_complete(shared_data):
    texts = alpaca_frame(shared_data, 150)["output"].to_list()
    texts += [texts[10].replace(" the ", " a ", 1), texts[20] + " Thanks.", texts[30][: len(texts[30]) // 2]]
    res = near_pairs(texts, 0.8)
    found = set(zip(res.a.tolist(), res.b.tolist(), strict=False))
    # no false positive: every pair's true Jaccard (reference implementation) is at or above 0.8
    for (i, j), s in zip(found, res.score.tolist(), strict=False):
        assert s == pytest.approx(char_jaccard(texts[i], texts[j]), abs=1e-6)
    assert all(char_jaccard(texts[i], texts[j]) >= 0.8 for i, j in found)
    # recall: every pair at Jaccard ≥ 0.9 in the brute-force all-pairs check is found
    grams = [char_grams(t) for t in texts]
    strong = {(i, j) for i, j in combinations(range(len(texts)), 2) if set_jaccard(grams[i], grams[j]) >= 0.9}
    assert {(10, 150), (20, 151)} <= strong <= found
    assert (30, 152) not in found  # half a text is not a near duplicate (Jaccard ≈ 0.5)


def test_shingles_are_the_same_in_chunks_and_per_document():
    from dataprep.dedupe.minhash import doc_shingles, shingle_all

    texts = [f"Row {i}: some text" for i in range(30)] + ["", "ab", "ＡＢＣＤＥＦ  gh"] * 4
    whole, chunked = shingle_all(texts), shingle_all(texts, chunk=7)
    np.testing.assert_array_equal(whole.offsets, chunked.offsets)
    np.testing.assert_array_equal(whole.values, chunked.values)
    for i, t in enumerate(texts):
        np.testing.assert_array_equal(whole.doc(i), doc_shingles(t))


def test_near_skips_empty_texts():
    res = near_pairs(["", "  ", "same text here", "same text here!"], 0.8)
    assert list(zip(res.a.tolist(), res.b.tolist(), strict=False)) == [(2, 3)]


# ---------------------------------------------------------------- semantic search


def planted_vectors(n=400, d=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    x[50] = x[10] + 0.05 * rng.normal(size=d)
    x[51] = x[10] + 0.05 * rng.normal(size=d)
    x[399] = x[0] + 0.1 * rng.normal(size=d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_pairs(x, threshold):
    sims = x @ x.T
    i, j = np.nonzero(np.triu(sims >= threshold, k=1))
    return set(zip(i.tolist(), j.tolist(), strict=False)), sims


@pytest.mark.parametrize("block", [7, 64, None])
def test_blocked_search_equals_brute_force(block):
    x = planted_vectors()
    expected, sims = brute_pairs(x, 0.8)
    res = semantic_pairs(x, 0.8, block=block, margin=0.1)
    assert set(zip(res.a.tolist(), res.b.tolist(), strict=False)) == expected
    assert {(10, 50), (10, 51), (50, 51), (0, 399)} <= expected
    np.testing.assert_allclose(res.score, sims[res.a, res.b], atol=1e-5)
    np.fill_diagonal(sims, -2)
    np.testing.assert_allclose(res.nearest, sims.max(axis=1), atol=1e-5)
    ba, bb, bs = res.below
    assert len(bs) and (bs < 0.8).all() and (bs >= 0.7).all() and (bs[:-1] >= bs[1:]).all()
    in_band = np.sort(sims[np.triu((sims < 0.8) & (sims >= 0.7), k=1)])[::-1]
    np.testing.assert_allclose(bs, in_band[: len(bs)], atol=1e-5)  # the highest ones below the threshold


def test_cluster_search_finds_a_subset_and_reports_recall():
    x = planted_vectors()
    expected, _ = brute_pairs(x, 0.8)
    res = cluster_pairs(x, 0.8, 4, recall_sample=400)
    found = set(zip(res.a.tolist(), res.b.tolist(), strict=False))
    assert found <= expected
    # with every row sampled, recall is exactly the share of exact pairs found
    assert res.stats["recall"] == pytest.approx(len(found) / len(expected))
    assert cluster_pairs(x, 0.8, 1, recall_sample=400).stats["recall"] == 1.0


# ---------------------------------------------------------------- end to end on alpaca


PLANTS = {
    # planted row -> (the original row it copies, the method that must find it)
    "case": (3, "exact"),
    "whitespace": (7, "exact"),
    "word": (12, "near"),
}


def planted_alpaca(shared_data: Path, tmp_path: Path) -> tuple[Path, int]:
    frame = alpaca_frame(shared_data)
    n = frame.height
    rows = frame.to_dicts()
    case = dict(rows[3], instruction=rows[3]["instruction"].upper())
    space = dict(rows[7], output="  " + rows[7]["output"].replace(" ", "   \n") + "\t")
    word = dict(rows[12], output=rows[12]["output"].replace(" the ", " this ", 1))
    assert word["output"] != rows[12]["output"]
    plants = pl.DataFrame([case, space, word], schema=frame.schema)
    path = tmp_path / "alpaca_planted.parquet"
    pl.concat([frame, plants]).write_parquet(path)
    return path, n


def test_alpaca_planted_duplicates_found_by_the_right_method(shared_data, tmp_path):
    path, n = planted_alpaca(shared_data, tmp_path)
    out = tmp_path / "out"
    manifest = dd.dedupe(path, out, methods=("exact", "near"))
    removed = pl.read_parquet(out / "removed.parquet")
    kept = pl.read_parquet(out / "records.parquet")
    assert manifest.counts.n_in == n + 3 == kept.height + removed.height
    planted = removed.filter(pl.col("id") >= n).sort("id")
    assert planted.select("id", "kept_id", "method").rows() == [
        (n, 3, "exact"), (n + 1, 7, "exact"), (n + 2, 12, "near")
    ]
    assert planted["score"][:2].to_list() == [1.0, 1.0] and 0.8 <= planted["score"][2] < 1.0
    # the demo set's own duplicates are reported too, but no planted original is removed
    assert not set(removed["id"].to_list()) & {3, 7, 12}
    assert kept.columns == pl.read_parquet(path).columns  # input schema unchanged
    assert kept.schema == pl.read_parquet(path).schema
    pairs = pl.read_parquet(out / "pairs.parquet")
    assert pairs.columns == ["id_a", "id_b", "score", "method"]
    assert {(3, n), (7, n + 1), (12, n + 2)} <= set(zip(pairs["id_a"], pairs["id_b"], strict=False))
    report = json.loads((out / "report.json").read_text())
    assert report["methods"]["exact"]["removed"] + report["methods"]["near"]["removed"] == removed.height
    assert set(report["timings"]) >= {"read", "exact", "near", "group", "write"}
    assert manifest.lineage.kind == "sft" and manifest.get("text_fields") == ["instruction", "input", "output"]


def test_rerun_is_skipped_and_force_redoes(shared_data, tmp_path, runner, monkeypatch):
    path = text_table(tmp_path, ["a b c d e f", "A B C D E F", "other"])
    out = tmp_path / "out"
    args = ["dedupe", str(path), "-o", str(out), "--methods", "exact,near", "--no-progress"]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "in 3 = out 2 + removed 1 (exact: 1, near: 0)" in first.output
    with monkeypatch.context() as m:  # an up-to-date check reads the schema, never the rows
        m.setattr("dataprep.io.read_records", lambda *a, **k: pytest.fail("read the records to skip"))
        again = runner.invoke(cli, args)
    assert "up to date" in again.output and "in 3 = out 2 + removed 1" in again.output
    forced = runner.invoke(cli, [*args, "--force"])
    assert "up to date" not in forced.output
    other = runner.invoke(cli, [*args, "--near-threshold", "0.5"])
    assert "up to date" not in other.output


# ---------------------------------------------------------------- bad input


def test_empty_file(tmp_path, runner):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    pl.DataFrame({"text": []}, schema={"text": pl.String}).write_parquet(tmp_path / "empty.parquet")
    result = runner.invoke(cli, ["dedupe", str(tmp_path / "empty.parquet"), "-o", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        "Error: dedupe: the input has no rows; check the input or the previous stage, or pass --allow-empty to "
        "write an empty output"]
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl", "empty.parquet"]
    result = runner.invoke(cli, ["dedupe", str(tmp_path / "empty.parquet"), "-o", str(tmp_path / "out"), "--no-progress",
                                 "--allow-empty"])
    assert result.exit_code == 0 and "in 0 = out 0 + removed 0" in result.output, result.output
    result = runner.invoke(cli, ["dedupe", str(path), "-o", str(tmp_path / "out2"), "--no-progress"])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        f"Error: {path} is empty (0 bytes): there are no rows to dedupe; check the path or the previous stage"
    ]
    assert not (tmp_path / "out2").exists()


def test_one_row_and_all_identical(tmp_path):
    one = dd.dedupe(text_table(tmp_path, ["only row"]), tmp_path / "one", methods=("exact", "near"))
    assert one.counts.n_out == 1 and one.counts.rejected == 0
    same = dd.dedupe(text_table(tmp_path, ["Same text"] * 50), tmp_path / "same", methods=("exact", "near"))
    assert same.counts.to_json() == {"in": 50, "out": 1, "rejected": 49, "rejected_by_reason": {"exact": 49, "near": 0}}
    assert pl.read_parquet(tmp_path / "same" / "removed.parquet")["kept_id"].unique().to_list() == [0]


def test_empty_texts_are_exact_duplicates_and_said_so(tmp_path):
    path = text_table(tmp_path, ["", "real text", "   ", None, "\n\t"])
    manifest = dd.dedupe(path, tmp_path / "out", methods=("exact", "near"))
    removed = pl.read_parquet(tmp_path / "out" / "removed.parquet")
    assert removed.select("id", "kept_id", "method").rows() == [(2, 0, "exact"), (3, 0, "exact"), (4, 0, "exact")]
    assert any("4 empty or whitespace-only texts" in w for w in manifest.get("warnings"))


def test_missing_on_column_lists_the_columns(tmp_path, runner):
    path = text_table(tmp_path, ["x"])
    with pytest.raises(DataprepError, match="not in the input; columns are: text"):
        dd.dedupe(path, tmp_path / "out", on=("body",))
    result = runner.invoke(cli, ["dedupe", str(path), "-o", str(tmp_path / "out"), "--on", "body"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: --on column(s) body not in the input; columns are: text"
    assert not (tmp_path / "out").exists()


def test_raw_or_malformed_input_is_a_one_line_error_that_names_convert(tmp_path, runner):
    raw = tmp_path / "data.json"
    raw.write_text('[{"text": "a"}]')
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\nnot json\n')
    for path, expected in ((raw, f"Error: {raw} is not a records file (.parquet or .jsonl); make one with "
                                 f"`dataprep convert {raw} -o DIR`"),
                           (bad, f"Error: cannot read records from {bad} (")):
        result = runner.invoke(cli, ["dedupe", str(path), "-o", str(tmp_path / "out"), "--no-progress"])
        assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
        assert result.output.startswith(expected), result.output
    assert "make records with `dataprep convert`" in result.output and not (tmp_path / "out").exists()


def test_infer_kind_from_columns():
    from dataprep.records import infer_kind

    assert infer_kind(["prompt", "chosen", "rejected", "messages"]) == "preference"
    assert infer_kind(["instruction", "input", "output"]) == "sft"
    assert infer_kind(["prompt", "completion", "source", "row"]) == "sft"
    assert infer_kind(["messages", "tools"]) == "chat"
    assert infer_kind(["text", "labels"]) == "classify"
    assert infer_kind(["text", "id"]) == "text"
    assert infer_kind(["body"]) is None


def test_unknown_text_column_asks_for_on(tmp_path):
    path = tmp_path / "t.parquet"
    pl.DataFrame({"body": ["x"], "n": [1]}).write_parquet(path)
    with pytest.raises(DataprepError, match=r"columns: body, n\); pass --on COLUMN"):
        dd.dedupe(path, tmp_path / "out")
    assert dd.dedupe(path, tmp_path / "out", on=["body"], methods=["exact"]).counts.n_out == 1


def test_bad_options_are_one_line_errors(tmp_path):
    path = text_table(tmp_path, ["x"])
    with pytest.raises(DataprepError, match="dedupe.methods: 'fuzzy' is not one of exact, ngram, near, semantic"):
        dd.dedupe(path, tmp_path / "o", methods=("fuzzy",))
    with pytest.raises(DataprepError, match="names a method twice"):
        dd.dedupe(path, tmp_path / "o", methods=("exact", "exact"))
    with pytest.raises(DataprepError, match=r"dedupe.threshold: 1.5 is out of range; expected a number in \(0, 1\]"):
        dd.dedupe(path, tmp_path / "o", threshold=1.5)
    with pytest.raises(DataprepError, match="START:STOP:STEP"):
        dd.parse_sweep("0.8-0.9")
    assert dd.parse_sweep("0.80:0.99:0.01")[-1] == 0.99 and len(dd.parse_sweep("0.80:0.99:0.01")) == 20


def test_killed_run_leaves_no_complete_looking_output(tmp_path, monkeypatch):
    import dataprep.dedupe.report as report

    path = text_table(tmp_path, ["a", "a", "b"])
    out = tmp_path / "out"

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "render_html", boom)
    with pytest.raises(KeyboardInterrupt):
        dd.dedupe(path, out, methods=("exact",))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [path]  # no temp directory left behind either


# ---------------------------------------------------------------- semantic orchestration with a fake encoder


class FakeEncoder:
    """Bag-of-letters vectors: texts with the same letters are identical, others differ."""

    device = "cpu"
    devices = ["cpu"]
    stats: dict = {}

    def __init__(self, *args, **kwargs):
        self.stats = {"truncated": 0, "embedded": 0, "cached": 0}
        self.max_tokens = 8

    def close(self) -> None:
        pass


def fake_embed(texts, encoder, **kwargs):
    x = np.zeros((len(texts), 27), dtype=np.float32)
    for i, t in enumerate(texts):
        for ch in t.lower():
            x[i, ord(ch) - 97 if "a" <= ch <= "z" else 26] += 1
        x[i, 26] += 0.01
    encoder.stats["embedded"] += len(texts)
    encoder.stats["truncated"] += sum(len(t) > encoder.max_tokens for t in texts)  # 1 char = 1 "token" here
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def fake_encoder(monkeypatch):
    import dataprep.embed as embed

    monkeypatch.setattr(embed, "load_encoder", FakeEncoder)
    monkeypatch.setattr(embed, "embed_texts", fake_embed)


SEM_TEXTS = ["abc", "bca", "xyz", "cabcab", "qqq", "zyx"]  # {0,1,3} and {2,5} are anagram groups


def test_semantic_method_groups_and_keeps_longest(tmp_path, fake_encoder):
    path = text_table(tmp_path, SEM_TEXTS)
    manifest = dd.dedupe(path, tmp_path / "out", methods=("semantic",), threshold=0.99, keep="longest")
    removed = pl.read_parquet(tmp_path / "out" / "removed.parquet")
    assert removed.select("id", "kept_id", "method").rows() == [
        (0, 3, "semantic"), (1, 3, "semantic"), (5, 2, "semantic")
    ]
    assert manifest.counts.by_reason == {"semantic": 3}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["methods"]["semantic"]["group_size_histogram"] == {"2": 1, "3": 1}
    assert set(report["timings"]) >= {"embed", "search", "group"}


def test_clusters_mode_reports_its_recall(tmp_path, fake_encoder):
    path = text_table(tmp_path, SEM_TEXTS)
    manifest = dd.dedupe(path, tmp_path / "out", methods=("semantic",), threshold=0.99, clusters=1)
    assert manifest.counts.by_reason == {"semantic": 3}  # one cluster: the same as exact search
    assert any("--clusters 1: recall against exact search 1.000" in w for w in manifest.get("warnings"))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["methods"]["semantic"]["recall"] == 1.0


def test_more_clusters_than_rows_is_one_cluster_per_row(tmp_path, fake_encoder):
    path = text_table(tmp_path, SEM_TEXTS)
    manifest = dd.dedupe(path, tmp_path / "out", methods=("semantic",), threshold=0.99, clusters=len(SEM_TEXTS) + 5)
    assert manifest.counts.n_in == len(SEM_TEXTS)
    assert manifest.counts.n_out + manifest.counts.rejected == len(SEM_TEXTS)


def test_long_texts_are_counted_in_a_warning(tmp_path, fake_encoder):
    path = text_table(tmp_path, ["short", "a much longer text", "another long text here"])
    manifest = dd.dedupe(path, tmp_path / "out", methods=("semantic",))
    assert "2 texts are longer than the model's 8-token window: embedded truncated" in " ".join(manifest.get("warnings"))
    assert manifest.counts.n_in == 3


def test_sweep_from_the_cli(tmp_path, runner, fake_encoder):
    path = text_table(tmp_path, SEM_TEXTS)
    plot = tmp_path / "plot.png"
    result = runner.invoke(cli, ["dedupe", str(path), "--sweep", "0.90:0.99:0.09", "--sweep-plot", str(plot),
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:3] == ["threshold  removed  kept", "    0.900        3     3",
                                              "    0.990        3     3"]
    assert plot.is_file()


def test_sweep_counts_rows_removed_per_threshold_and_writes_only_a_plot(tmp_path, fake_encoder):
    path = text_table(tmp_path, SEM_TEXTS + ["abd"])
    plot = tmp_path / "sweep.png"
    rows = dd.sweep(path, [0.5, 0.8, 0.99], plot, methods=("exact", "semantic"))
    sims = fake_embed(["abc", "abd"], FakeEncoder()) @ fake_embed(["abc", "abd"], FakeEncoder()).T
    assert 0.5 < sims[0, 1] < 0.8  # so "abd" joins the {abc} group at 0.5 only
    by_t = {r["threshold"]: r["removed"] for r in rows}
    assert by_t[0.99] == 3 and by_t[0.8] == 3 and by_t[0.5] >= 4
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet", "sweep.png"]


# ---------------------------------------------------------------- the HTML report in a real browser


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_report_html_renders_groups_in_chromium(shared_data, tmp_path):
    browser = chromium()
    if not browser:
        pytest.skip("no chromium binary on this machine (.ci/run installs the Debian `chromium` package)")
    path, n = planted_alpaca(shared_data, tmp_path)
    dd.dedupe(path, tmp_path / "out", methods=("exact", "near"))
    page = tmp_path / "out" / "report.html"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'chrome'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert f"in {n + 3} = kept" in html
    assert html.count('class="group"') >= 3
    assert "kept #3</h3>" in html and f"removed #{n} · score 1.000" in html
    assert "just below the threshold 0.8" in html
    shot = tmp_path / "report.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1300,1800", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:4] == b"\x89PNG"


def test_chat_records_compare_their_messages(tmp_path):
    msgs = [
        [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}],
        [{"role": "user", "content": "hi  THERE"}, {"role": "assistant", "content": "hello!"}],
        [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Bye."}],
    ]
    path = tmp_path / "chat.parquet"
    pl.DataFrame({"messages": msgs, "tools": [None] * 3}).write_parquet(path)
    assert dd.record_texts(pl.read_parquet(path), ("messages",))[0] == "user: Hi there\nassistant: Hello!"
    manifest = dd.dedupe(path, tmp_path / "out", methods=("exact",))
    assert manifest.lineage.kind == "chat" and manifest.get("text_fields") == ["messages"]
    assert pl.read_parquet(tmp_path / "out" / "removed.parquet").select("id", "kept_id").rows() == [(1, 0)]


# ---------------------------------------------------------------- no removal by chaining, end to end


def vector_embed(vectors: dict[str, list[float]]):
    """A fake embed_texts that looks each text's vector up (normalised)."""

    def embed(texts, encoder, **kwargs):
        x = np.array([vectors[t] for t in texts], dtype=np.float32)
        encoder.stats["embedded"] += len(texts)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return embed


def test_semantic_chain_keeps_its_far_end(tmp_path, monkeypatch):
    import dataprep.embed as embed

    # cos(a, b) = cos(b, c) = 0.9 ≥ 0.85 but cos(a, c) = 0.62: c is not a duplicate of a
    theta = np.arccos(0.9)
    vectors = {t: [np.cos(k * theta), np.sin(k * theta), 0.0] for k, t in enumerate(["a", "b", "c"])}
    vectors["d"] = [0.0, 0.0, 1.0]
    monkeypatch.setattr(embed, "load_encoder", FakeEncoder)
    monkeypatch.setattr(embed, "embed_texts", vector_embed(vectors))
    path = text_table(tmp_path, ["a", "b", "c", "d"])
    manifest = dd.dedupe(path, tmp_path / "out", methods=("semantic",), threshold=0.85, keep="first")
    removed = pl.read_parquet(tmp_path / "out" / "removed.parquet")
    assert removed.select("id", "kept_id").rows() == [(1, 0)] and removed["score"][0] == pytest.approx(0.9)
    assert pl.read_parquet(tmp_path / "out" / "records.parquet")["text"].to_list() == ["a", "c", "d"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())["methods"]["semantic"]
    assert report["group_size_histogram"] == {"3": 1} and report["kept_in_groups"] == 2  # reported whole
    assert manifest.counts.by_reason == {"semantic": 1}
    # keep=longest on the same chain: b leads (ties by length go to input order, so make b longest)
    vectors["bb"] = vectors.pop("b")
    path = text_table(tmp_path, ["a", "bb", "c", "d"])
    dd.dedupe(path, tmp_path / "out2", methods=("semantic",), threshold=0.85, keep="longest")
    assert pl.read_parquet(tmp_path / "out2" / "removed.parquet").select("id", "kept_id").rows() == [(0, 1), (2, 1)]


def check_removals(source: Path, out: Path, threshold: dict[str, float]) -> pl.DataFrame:
    """Every removed row: its kept_id stays in records.parquet and its score is at or above the method's threshold."""
    from dataprep.io import find_data_file

    rows = pl.read_parquet(find_data_file(source))
    removed = pl.read_parquet(out / "removed.parquet")
    stays = sorted(set(range(rows.height)) - set(removed["id"].to_list()))
    assert pl.read_parquet(out / "records.parquet").equals(rows[stays])  # records.parquet: the rows that stay
    assert set(removed["kept_id"].to_list()) <= set(stays), "a kept_id that was itself removed"
    for method, t in threshold.items():
        assert (removed.filter(pl.col("method") == method)["score"] >= t).all()
    return removed


def test_every_removal_scores_against_a_row_that_stays(shared_data, tmp_path):
    frame = alpaca_frame(shared_data)
    n = frame.height
    long = max(frame.to_dicts(), key=lambda r: len(r["output"]))
    # a chain on real text: windows of 900 characters 50 apart; windows 1 or 2 steps apart are near
    # duplicates (Jaccard ≥ 0.8), 3 steps apart are not. Components join all 7; removal must not.
    windows = [dict(long, instruction="", input="", output=long["output"][50 * k : 50 * k + 900]) for k in range(7)]
    path = tmp_path / "chain.parquet"
    pl.concat([frame, pl.DataFrame(windows, schema=frame.schema)]).write_parquet(path)
    texts = dd.record_texts(pl.read_parquet(path), ("instruction", "input", "output"))
    assert char_jaccard(texts[n], texts[n + 2]) >= 0.8 > char_jaccard(texts[n], texts[n + 3])
    dd.dedupe(path, tmp_path / "out", methods=("exact", "near"))
    removed = check_removals(path, tmp_path / "out", {"exact": 1.0, "near": 0.8})
    chain = removed.filter(pl.col("id") >= n).sort("id")
    # leaders in input order: window 0 removes 1 and 2; 3 (a pair of 1, 2, 4, 5) stays and removes 4, 5; 6 stays
    assert chain.select("id", "kept_id").rows() == [(n + 1, n), (n + 2, n), (n + 4, n + 3), (n + 5, n + 3)]
    for rid, kid, method, score in removed.select("id", "kept_id", "method", "score").rows():
        if method == "near":  # the score is the true Jaccard of the pair itself
            assert score == pytest.approx(char_jaccard(texts[rid], texts[kid]), abs=1e-6)
        else:
            assert normalize_text(texts[rid]) == normalize_text(texts[kid])
    report = json.loads((tmp_path / "out" / "report.json").read_text())["methods"]["near"]
    assert "7" in report["group_size_histogram"]  # the group is reported whole


# ---------------------------------------------------------------- a model that cannot read the data


def korean_table(tmp_path: Path, n: int = 30) -> Path:
    """n rows of random Hangul syllables (no two near duplicates), an English row and a row without letters."""
    rng = np.random.default_rng(0)
    hangul = ["".join(chr(0xAC00 + int(c)) for c in rng.integers(0, 11172, 24)) for _ in range(n)]
    return text_table(tmp_path, hangul + ["An English row", "12345"])


@pytest.fixture
def no_embedding(monkeypatch):
    import dataprep.embed as embed

    monkeypatch.setattr(embed, "load_encoder", FakeEncoder)
    monkeypatch.setattr(embed, "embed_texts", lambda *a, **k: pytest.fail("embedded texts the model cannot read"))


def test_semantic_asked_for_is_refused_on_text_the_model_cannot_read(tmp_path, runner, no_embedding):
    path = korean_table(tmp_path)
    out = tmp_path / "out"
    result = runner.invoke(cli, ["dedupe", str(path), "-o", str(out), "--methods", "exact,near,semantic", "--no-progress"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: semantic dedupe refused: 30 of 31 texts (96.8%) are in "
                                                   "Hangul (Korean), which model 'minilm' does not read (English, per "
                                                   "its model card)")
    assert "--model sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2" in lines[0]
    assert "--allow-model-language-mismatch" in lines[0]
    assert not out.exists()
    with pytest.raises(DataprepError, match="semantic dedupe refused"):
        dd.sweep(path, [0.8, 0.9], methods=("semantic",))


def test_default_methods_skip_semantic_and_say_why(tmp_path, runner, no_embedding):
    path = korean_table(tmp_path)
    out = tmp_path / "out"
    result = runner.invoke(cli, ["dedupe", str(path), "-o", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "warning: semantic skipped (exact and near ran): 30 of 31 texts (96.8%) are in Hangul (Korean)" in result.output
    assert "in 32 = out 32 + removed 0 (exact: 0, near: 0)" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["methods"] == ["exact", "near", "semantic"]
    assert any(w.startswith("semantic skipped") for w in manifest["warnings"]) and manifest["semantic_skipped"]
    report = json.loads((out / "report.json").read_text())
    assert "semantic" not in report["methods"]
    assert report["language"]["outside"] == {"Hangul": 30} and report["language"]["model_scripts"] == ["Latin"]
    # the same options asked for explicitly are refused, not answered by the up-to-date output
    again = runner.invoke(cli, ["dedupe", str(path), "-o", str(out), "--methods", "exact,near,semantic", "--no-progress"])
    assert again.exit_code == 1 and "semantic dedupe refused" in again.output
    assert (out / "manifest.json").is_file()  # the earlier output is left as it was


def test_override_runs_semantic_anyway_with_warnings(tmp_path, fake_encoder):
    path = korean_table(tmp_path)
    manifest = dd.dedupe(path, tmp_path / "out", methods=("semantic",), allow_model_language_mismatch=True)
    warnings = manifest.get("warnings")
    assert any(w.startswith("semantic ran although 30 of 31 texts") for w in warnings)
    # the fake letter-count vectors put every Hangul text together: the embeddings do not separate them
    assert any("median nearest-neighbour similarity is 1.000" in w for w in warnings), warnings
    assert manifest.config["allow_model_language_mismatch"] is True
    check_removals(path, tmp_path / "out", {"semantic": dd.DEFAULT_THRESHOLD})


def test_model_languages_from_its_card_or_the_table(tmp_path, fake_encoder):
    from dataprep.dedupe.language import model_languages

    ko_model = tmp_path / "my-ko-model"
    ko_model.mkdir()
    (ko_model / "README.md").write_text("---\nlanguage:\n- ko\n- en\nlicense: mit\n---\n# a Korean model\n")
    label, scripts, source = model_languages(str(ko_model), str(ko_model))
    assert scripts == {"Hangul", "Latin"} and source == "its model card"
    path = korean_table(tmp_path)
    manifest = dd.dedupe(path, tmp_path / "out", methods=("semantic",), model=str(ko_model), threshold=0.99)
    assert not any("does not read" in w for w in manifest.get("warnings"))
    # no card, not in the table: a warning, not a refusal
    bare = tmp_path / "bare"
    bare.mkdir()
    manifest = dd.dedupe(path, tmp_path / "out2", methods=("semantic",), model=str(bare), threshold=0.99)
    assert any("cannot tell which languages model" in w for w in manifest.get("warnings"))
    (bare / "config.json").write_text('{"language": "zh"}')  # some configs say it too
    assert model_languages(str(bare), str(bare))[1:] == ({"Han"}, "its config.json")
    (bare / "config.json").unlink()
    assert model_languages("sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2", None)[0] == "many languages"
    assert model_languages("BAAI/bge-m3", None)[0] == "many languages"
    assert model_languages("sentence-transformers/all-MiniLM-L6-v2", None)[1] == {"Latin"}


def test_scripts_of_texts():
    from dataprep.dedupe.language import SCRIPTS, text_scripts

    texts = ["Hello world", "안녕하세요 world", "你好世界", "こんにちは世界", "Привет мир", "مرحبا", "नमस्ते", "สวัสดี",
             "Γειά σου", "12345 !?", "", "hello 世界"]
    names = [SCRIPTS[i] if i >= 0 else None for i in text_scripts(texts)]
    assert names == ["Latin", "Hangul", "Han", "Kana", "Cyrillic", "Arabic", "Devanagari", "Thai", "Greek", None, None,
                     "Latin"]



def test_large_inputs_are_sampled(monkeypatch):
    from dataprep.dedupe import language

    monkeypatch.setattr(language, "MAX_TEXTS", 100)
    lang = language.check(["안녕하세요"] * 900 + ["hello"] * 100, "minilm", None)
    assert lang.texts == 100 and lang.sampled_from == 1000 and 0.8 < lang.share_outside < 0.97
    assert lang.what().startswith(f"{lang.n_outside} of 100 sampled texts (of 1000) (")


def test_ko_alpaca_default_dedupe_removes_a_handful_and_explains_itself(shared_data, tmp_path, runner, no_embedding):
    from dataprep.convert import convert

    convert([str(shared_data / "ko_alpaca_1040.json")], str(tmp_path / "ko"), kind="sft", template="ko-alpaca")
    out = tmp_path / "kodd"
    result = runner.invoke(cli, ["dedupe", str(tmp_path / "ko"), "-o", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["in"] == 1040 and manifest["counts"]["rejected"] <= 5
    assert "warning: semantic skipped (exact and near ran)" in result.output
    assert "Hangul (Korean), which model 'minilm' does not read" in result.output
    assert "--allow-model-language-mismatch" in result.output
    check_removals(tmp_path / "ko", out, {"exact": 1.0, "near": 0.8})


def test_a_later_method_never_removes_a_row_an_earlier_one_kept(tmp_path, monkeypatch):
    import dataprep.embed as embed

    # "b" and "a" are semantic duplicates (cos 0.95); "A" is an exact copy of "a" and goes first.
    # keep=first would keep "b" and remove "a", leaving A's kept_id pointing at a removed row:
    # instead "a", which stands for "A", stays and "b" goes for it.
    theta = np.arccos(0.95)
    vectors = {"b": [1.0, 0.0], "a": [np.cos(theta), np.sin(theta)], "c": [0.0, 1.0]}
    monkeypatch.setattr(embed, "load_encoder", FakeEncoder)
    monkeypatch.setattr(embed, "embed_texts", vector_embed(vectors))
    path = text_table(tmp_path, ["b", "a", "c", "A"])
    dd.dedupe(path, tmp_path / "out", methods=("exact", "semantic"), threshold=0.9)
    removed = check_removals(path, tmp_path / "out", {"exact": 1.0, "semantic": 0.9})
    assert removed.select("id", "kept_id", "method").rows() == [(0, 1, "semantic"), (3, 1, "exact")]
    rows = dd.sweep(path, [0.9], methods=("exact", "semantic"))
    assert rows[0]["removed"] == 2


def test_recipe_without_methods_says_semantic_was_skipped(tmp_path, runner, no_embedding):
    path = korean_table(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nworkdir: {tmp_path / 'w'}\ndedupe:\n  input: {path}\n")
    result = runner.invoke(cli, ["run", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "warning (dedupe): semantic skipped (exact and near ran): 30 of 31 texts (96.8%) are in Hangul" in result.output
    recipe.write_text(f"name: r\nworkdir: {tmp_path / 'w2'}\ndedupe:\n  input: {path}\n  methods: [exact, semantic]\n")
    result = runner.invoke(cli, ["run", str(recipe)])
    assert result.exit_code == 1 and "semantic dedupe refused" in result.output
    assert not (tmp_path / "w2" / "dedupe").exists()


def test_embed_workers_reach_the_encoder_and_do_not_change_the_fingerprint(tmp_path, fake_encoder, monkeypatch):
    """--embed-workers only says how several GPUs embed, --batch-size only how many texts a forward
    holds: the encoder gets them, the rerun with others is skipped."""
    import dataprep.embed as embed

    asked = []
    monkeypatch.setattr(embed, "load_encoder", lambda *a, **k: asked.append(k.get("workers")) or FakeEncoder())
    path = text_table(tmp_path, SEM_TEXTS)
    first = dd.dedupe(path, tmp_path / "out", methods=("semantic",), threshold=0.99, embed_workers="threads")
    again = dd.dedupe(path, tmp_path / "out", methods=("semantic",), threshold=0.99, embed_workers="processes")
    assert asked == ["threads"] and not first.skipped and again.skipped
    assert dd.dedupe(path, tmp_path / "out", methods=("semantic",), threshold=0.99, batch_size=16).skipped
    assert not dd.dedupe(path, tmp_path / "out", methods=("semantic",), threshold=0.98, batch_size=16).skipped
    with pytest.raises(DataprepError, match="embed_workers"):
        dd.dedupe(path, tmp_path / "out2", methods=("semantic",), embed_workers="fibers")


def test_the_encoder_is_closed_before_the_search_and_when_embedding_fails(tmp_path, monkeypatch):
    """Its worker processes and model copies give their (GPU) memory back before the search; an error
    while embedding stops them too."""
    import dataprep.embed as embed
    from dataprep.dedupe import methods

    events = []

    class Closing(FakeEncoder):
        def close(self) -> None:
            events.append("close")

    def fail(texts, encoder, **kwargs):
        raise DataprepError("the embedding worker failed: out of memory")

    monkeypatch.setattr(embed, "load_encoder", Closing)
    monkeypatch.setattr(embed, "embed_texts", fake_embed)
    monkeypatch.setattr(methods, "semantic_pairs", lambda *a, **k: events.append("search") or semantic_pairs(*a, **k))
    path = text_table(tmp_path, SEM_TEXTS)
    manifest = dd.dedupe(path, tmp_path / "out", methods=("semantic",), threshold=0.99)
    assert events == ["close", "search"] and manifest.counts.by_reason == {"semantic": 3}
    monkeypatch.setattr(embed, "embed_texts", fail)
    with pytest.raises(DataprepError, match="out of memory"):
        dd.dedupe(path, tmp_path / "out2", methods=("semantic",), threshold=0.99)
    assert events == ["close", "search", "close"] and not (tmp_path / "out2").exists()
