"""Decontamination: `dedupe --against EVAL` removes training rows matching an eval row, shows the
eval row each one matched, and never touches the eval set."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dataprep import dedupe as dd
from dataprep.cli import cli
from dataprep.dedupe import against as ag
from dataprep.dedupe.exact import normalize_text
from dataprep.errors import DataprepError

EVAL_Q = ("Natalia sold clips to forty eight of her friends in April and then she sold half as many clips "
          "in May how many clips did Natalia sell altogether")  # 28 words


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def text_records(path: Path, texts: list[str]) -> Path:
    pl.DataFrame({"text": texts, "source": ["train.jsonl"] * len(texts), "row": list(range(len(texts)))},
                 schema={"text": pl.String, "source": pl.String, "row": pl.Int64}).write_parquet(path)
    return path


def brute_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Reference word n-grams, written independently of against.py."""
    import re

    w = re.sub(r"[^\w\s]+", " ", normalize_text(text)).split()
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def test_each_method_and_the_eval_row_it_matched(tmp_path, runner):
    ev = write_jsonl(tmp_path / "gsm.jsonl", [{"question": EVAL_Q, "answer": "72"},
                                               {"question": "What is two plus two?", "answer": "4"}])
    before = ev.read_bytes()
    train = text_records(tmp_path / "train.parquet", [
        "An unrelated row about the weather in Seoul today.",
        EVAL_Q.upper() + "   \n\n72",  # verbatim after normalisation (both fields, joined)
        "Solve this: " + EVAL_Q + ". Think step by step.",  # contains the question: shares its 16 13-grams
        "What is two plus two?",  # the short eval row: too short for 13-grams, and not equal to question+answer
    ])
    res = runner.invoke(cli, ["dedupe", str(train), "--against", str(ev), "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "in 4 = out 2 + removed 2 (contaminated (exact): 1, contaminated (ngram): 1)" in res.output
    removed = pl.read_parquet(tmp_path / "out" / "removed.parquet")
    assert removed.select("id", "method", "eval_source", "eval_row").rows() == [
        (1, "exact", str(ev), 0), (2, "ngram", str(ev), 0)]
    assert removed["eval_text"][1] == EVAL_Q + "\n\n72"
    # the eval row has 28 + 1 words = 17 13-grams; the training row contains the question's 16
    assert removed["score"][1] == pytest.approx(16 / 17)
    assert pl.read_parquet(tmp_path / "out" / "records.parquet")["row"].to_list() == [0, 3]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["methods"]["ngram"]["eval_rows_too_short"] == 1
    assert ev.read_bytes() == before  # the eval set is never written
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Natalia" in html and f"{ev}:0" in html
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["rejected_by_reason"] == {"contaminated (exact)": 1, "contaminated (ngram)": 1}


def test_min_overlap_and_ngram_size(tmp_path):
    ev = write_jsonl(tmp_path / "ev.jsonl", [{"q": EVAL_Q}])
    half = " ".join(EVAL_Q.split()[:15])  # 3 of the eval row's 16 13-grams
    train = text_records(tmp_path / "train.parquet", [half, EVAL_Q, "unrelated"])
    out = dd.dedupe(train, tmp_path / "a", against=(str(ev),), min_overlap=0.5)
    assert out.counts.n_out == 2  # the half row shares 3/16 < 0.5
    out = dd.dedupe(train, tmp_path / "b", against=(str(ev),), methods=("ngram",))
    removed = pl.read_parquet(tmp_path / "b" / "removed.parquet")
    assert removed["score"].to_list() == pytest.approx([3 / 16, 1.0])
    out = dd.dedupe(train, tmp_path / "c", against=(str(ev),), methods=("ngram",), against_ngram=16)
    assert out.counts.n_out == 2  # 15 words hold no 16-gram


def _contaminated(shared_data: Path, tmp_path: Path) -> tuple[Path, Path, set[int], set[int]]:
    """alpaca_en_demo split 899/100; 50 eval rows of ≥ 20 words planted in the training part, 25 verbatim and
    25 edited (case changed, a sentence appended); returns the planted rows' numbers."""
    rows = json.loads((shared_data / "alpaca_en_demo.json").read_text())
    rng = random.Random(0)
    order = list(range(len(rows)))
    rng.shuffle(order)
    ev, train = [rows[i] for i in order[:100]], [rows[i] for i in order[100:]]
    planted = []
    long_rows = [r for r in ev if len(" ".join(r.values()).split()) >= 20]
    for k, r in enumerate(long_rows[:50]):
        r = dict(r)
        if k >= 25:  # edited
            r["instruction"] = r["instruction"].upper()
            r["output"] = r["output"] + " I hope this helps."
        planted.append(r)
    slots = sorted(rng.sample(range(len(train) + 50), 50))
    out, it, marks = [], iter(train), {}
    for pos in range(len(train) + 50):
        if pos in slots:
            marks[pos] = slots.index(pos)
            out.append(planted[slots.index(pos)])
        else:
            out.append(next(it))
    write_jsonl(tmp_path / "train.jsonl", out)
    write_jsonl(tmp_path / "eval.jsonl", ev)
    verbatim = {p for p, k in marks.items() if k < 25}
    edited = {p for p, k in marks.items() if k >= 25}
    return tmp_path / "train.jsonl", tmp_path / "eval.jsonl", verbatim, edited


def test_planted_alpaca_rows_are_found_and_ngram_equals_brute_force(shared_data, tmp_path, runner):
    train_raw, ev, verbatim, edited = _contaminated(shared_data, tmp_path)
    assert runner.invoke(cli, ["convert", str(train_raw), "--template", "alpaca", "-o", str(tmp_path / "tr")]).exit_code == 0
    assert runner.invoke(cli, ["convert", str(ev), "--template", "alpaca", "-o", str(tmp_path / "ev")]).exit_code == 0
    dd.dedupe(tmp_path / "tr", tmp_path / "both", against=(str(tmp_path / "ev"),))
    assert verbatim | edited <= set(pl.read_parquet(tmp_path / "both" / "removed.parquet")["row"].to_list())
    m = dd.dedupe(tmp_path / "tr", tmp_path / "out", against=(str(tmp_path / "ev"),), methods=("ngram",))
    found = set(pl.read_parquet(tmp_path / "out" / "removed.parquet")["row"].to_list())
    # the same rows as a brute-force set check over the same texts
    tr = pl.read_parquet(tmp_path / "tr" / "records.parquet")
    fields = ("instruction", "input", "output")  # the sft kind's text
    texts = dd.record_texts(tr, fields)
    ev_texts = dd.record_texts(pl.read_parquet(tmp_path / "ev" / "records.parquet"), fields)
    ev_grams = set().union(*(brute_ngrams(t, 13) for t in ev_texts))
    brute = {tr["row"][i] for i, t in enumerate(texts) if brute_ngrams(t, 13) & ev_grams}
    assert found == brute
    assert m.counts.n_in == m.counts.n_out + len(found)


def test_near_finds_the_edited_copies(shared_data, tmp_path, runner):
    train_raw, ev, verbatim, edited = _contaminated(shared_data, tmp_path)
    assert runner.invoke(cli, ["convert", str(train_raw), "--template", "alpaca", "-o", str(tmp_path / "tr")]).exit_code == 0
    dd.dedupe(tmp_path / "tr", tmp_path / "out", against=(str(ev),), methods=("near",), near_threshold=0.7)
    removed = pl.read_parquet(tmp_path / "out" / "removed.parquet")
    assert verbatim | edited <= set(removed["row"].to_list())
    assert (removed["score"] >= 0.7).all()


class _Encoder:
    """What semantic_hits uses of an Encoder; `close` is recorded in `closed`."""

    device, max_tokens = "cpu", 128

    def __init__(self, closed: list) -> None:
        self.stats, self.closed = {}, closed

    def close(self) -> None:
        self.closed.append(self)


def test_semantic_against_uses_the_nearest_eval_row(tmp_path, monkeypatch):
    from dataprep import embed

    vecs = {"a": [1, 0], "b": [0, 1], "a2": [0.96, 0.28], "c": [0.6, 0.8]}
    closed = []
    monkeypatch.setattr(embed, "load_encoder", lambda *a, **k: _Encoder(closed))
    monkeypatch.setattr(embed, "embed_texts", lambda texts, enc, **k: np.array([vecs[t] for t in texts], np.float32))
    from dataprep.dedupe import stage

    monkeypatch.setattr(stage, "language_gate", lambda *a, **k: None)
    ev = write_jsonl(tmp_path / "ev.jsonl", [{"t": "a"}, {"t": "b"}])
    train = text_records(tmp_path / "train.parquet", ["a2", "c"])
    dd.dedupe(train, tmp_path / "out", against=(str(ev),), methods=("semantic",), threshold=0.9)
    removed = pl.read_parquet(tmp_path / "out" / "removed.parquet")
    assert removed.select("id", "eval_row").rows() == [(0, 0)]
    assert removed["score"][0] == pytest.approx(0.96)
    assert len(closed) == 1  # the model copies and workers are let go once the vectors are in


def test_semantic_against_closes_the_encoder_when_embedding_fails(tmp_path, monkeypatch):
    from dataprep import embed
    from dataprep.dedupe import stage

    closed = []

    def fail(texts, enc, **k):
        raise DataprepError("the embedding worker failed: out of memory")

    monkeypatch.setattr(embed, "load_encoder", lambda *a, **k: _Encoder(closed))
    monkeypatch.setattr(embed, "embed_texts", fail)
    monkeypatch.setattr(stage, "language_gate", lambda *a, **k: None)
    ev = write_jsonl(tmp_path / "ev.jsonl", [{"t": "a"}])
    train = text_records(tmp_path / "train.parquet", ["a2"])
    with pytest.raises(DataprepError, match="out of memory"):
        dd.dedupe(train, tmp_path / "out", against=(str(ev),), methods=("semantic",), threshold=0.9)
    assert len(closed) == 1 and not (tmp_path / "out").exists()


def test_plain_text_eval_file(tmp_path):
    (tmp_path / "ev.txt").write_text(EVAL_Q + "\n", encoding="utf-8")
    train = text_records(tmp_path / "train.parquet", ["x " + EVAL_Q, "unrelated"])
    m = dd.dedupe(train, tmp_path / "out", against=(str(tmp_path / "ev.txt"),))
    assert (m.counts.n_in, m.counts.n_out) == (2, 1)


def test_bad_against_options_are_one_line_errors(tmp_path, runner):
    train = text_records(tmp_path / "train.parquet", ["a row"])
    ev = write_jsonl(tmp_path / "ev.jsonl", [{"q": "a row"}])
    cases = [
        (["--against", str(tmp_path / "missing.jsonl")], "does not exist"),
        (["--methods", "exact,ngram"], "ngram method compares against eval sets"),
        (["--against", str(ev), "--against-on", "nope"], "--against-on nope not in"),
        (["--against", str(ev), "--min-overlap", "1.5"], "1.5"),
    ]
    for args, message in cases:
        res = runner.invoke(cli, ["dedupe", str(train), "-o", str(tmp_path / "out"), *args])
        assert res.exit_code != 0, args
        assert message in res.output, (args, res.output)
        assert "Traceback" not in res.output
        assert not (tmp_path / "out").exists()


def test_rerun_is_skipped_until_the_eval_set_changes(tmp_path):
    ev = write_jsonl(tmp_path / "ev.jsonl", [{"q": EVAL_Q}])
    train = text_records(tmp_path / "train.parquet", [EVAL_Q, "other"])
    dd.dedupe(train, tmp_path / "out", against=(str(ev),))
    assert dd.dedupe(train, tmp_path / "out", against=(str(ev),)).skipped
    write_jsonl(ev, [{"q": "something else entirely"}])
    again = dd.dedupe(train, tmp_path / "out", against=(str(ev),))
    assert not again.skipped and again.counts.n_out == 2


def test_word_ngram_hashes_stay_inside_each_text():
    units, offsets = ag.word_hashes(["a b c", "d e", "f g h i"])
    h, doc = ag.ngram_hashes(units, offsets, 3)
    assert doc.tolist() == [0, 2, 2]
    assert h[0] == ag.ngram_hashes(*ag.word_hashes(["a b c"]), 3)[0][0]


def test_against_under_the_ray_engine_says_it_ran_locally(tmp_path):
    ev = write_jsonl(tmp_path / "ev.jsonl", [{"q": EVAL_Q}])
    train = text_records(tmp_path / "train.parquet", [EVAL_Q, "other"])
    m = dd.dedupe(train, tmp_path / "out", against=(str(ev),), engine="ray")
    assert m.counts.n_out == 1
    assert m.get("warnings") == ["--against ran on the local engine (--engine ray applies to within-set dedupe only)"]
