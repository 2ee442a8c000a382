"""`dataprep stats` and `dataprep inspect`: exact rendered rows, marks, packed sequences, the CLI."""

from __future__ import annotations

import json

import polars as pl
import pytest

from dataprep.cli import cli
from dataprep.errors import DataprepError
from dataprep.inspect_shards import length_stats, render_row
from dataprep.tokenize import tokenize


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    d = tmp_path_factory.mktemp("inspect") / "records"
    d.mkdir()
    pl.DataFrame({"prompt": ["###답변:", "Q: 2+2?\nA:"], "completion": ["서울", " 4"], "source": ["t", "t"],
                  "row": [0, 1]}).write_parquet(d / "records.parquet")
    (d / "manifest.json").write_text(json.dumps({"stage": "convert", "kind": "sft"}))
    return d


@pytest.fixture(scope="module")
def shards(records):
    out = records.parent / "tok"
    tokenize(records, out, max_len=64, progress=False)
    return out


@pytest.fixture(scope="module")
def packed(records):
    out = records.parent / "packed"
    tokenize(records, out, max_len=64, pack=True, progress=False)
    return out


def test_render_row_brackets_trained_tokens(shards):
    assert render_row(shards, 0) == "row 0: 14 tokens, 7 trained (trained tokens between [[ ]])\n###답변:[[서울<|im_end|>]]"
    assert render_row(shards, 1).splitlines()[1] == "Q: 2+2?\nA:[[ 4<|im_end|>]]".splitlines()[0]
    assert render_row(shards, 1).endswith("A:[[ 4<|im_end|>]]")


def test_render_row_colour(shards):
    text = render_row(shards, 0, color=True)
    assert "\x1b[32m" in text and "[[" not in text and "서울<|im_end|>" in text


def test_render_row_token_table(shards):
    lines = render_row(shards, 0, tokens=True).splitlines()
    assert lines[-1].split()[:3] == ["13", "2", "T"] and lines[2].split()[:3] == ["0", "3757", "."]


def test_render_packed_row_per_sequence(packed):
    text = render_row(packed, 0)
    assert "--- sequence 1/2 (14 tokens, positions 0..13)" in text
    assert "--- sequence 2/2" in text and "###답변:[[서울<|im_end|>]]" in text


def test_render_row_out_of_range(shards):
    with pytest.raises(DataprepError, match="out of range"):
        render_row(shards, 5)


def test_length_stats_packed_counts_sequences(packed, shards):
    s, p = length_stats(shards), length_stats(packed)
    assert (s["rows"], s["sequences"], p["rows"], p["sequences"]) == (2, 2, 1, 2)
    assert s["length"]["max"] == p["length"]["max"] == 14 and s["tokens"] == p["tokens"]
    assert s["fits"]["256"] == 1.0


def test_cli_tokenize_stats_inspect(records, tmp_path, runner):
    out = tmp_path / "tok"
    r = runner.invoke(cli, ["tokenize", str(records), "-o", str(out), "--max-len", "64"])
    assert r.exit_code == 0, r.output
    assert "in 2 = out 2 + rejected 0" in r.output and "pad id 0 (<|endoftext|>" in r.output
    again = runner.invoke(cli, ["tokenize", str(records), "-o", str(out), "--max-len", "64"])
    assert "up to date" in again.output
    r = runner.invoke(cli, ["inspect", str(out), "--row", "0"])
    assert r.exit_code == 0 and "###답변:[[서울<|im_end|>]]" in r.output  # not a terminal: brackets
    png = tmp_path / "len.png"
    r = runner.invoke(cli, ["stats", str(out), "--plot", str(png)])
    assert r.exit_code == 0 and "p50" in r.output and png.read_bytes()[:4] == b"\x89PNG"


def test_html_page_highlights_trained_tokens(packed, tmp_path, runner):
    page = tmp_path / "masks.html"
    r = runner.invoke(cli, ["inspect", str(packed), "--html", str(page)])
    assert r.exit_code == 0, r.output
    text = page.read_text()
    assert '<pre>###답변:<span class="t">서울&lt;|im_end|&gt;</span></pre>' in text
    assert "sequence 2/2" in text and text.count("<h2>") == 1


def test_rows_out_of_range_are_one_line_errors_and_write_nothing(shards, tmp_path, runner):
    r = runner.invoke(cli, ["inspect", str(shards), "--row", "0", "--row", "99"])
    assert r.exit_code == 1 and r.output.strip() == f"Error: --row 99 is out of range; {shards} has 2 rows (0..1)"
    page = tmp_path / "p.html"
    r = runner.invoke(cli, ["inspect", str(shards), "--html", str(page), "--row", "99"])
    assert r.exit_code == 1 and "--row 99 is out of range" in r.output
    assert list(tmp_path.iterdir()) == []  # no empty page, no temporary file left
    r = runner.invoke(cli, ["inspect", str(shards), "--html", str(page), "--first", "10"])  # more than there are
    assert r.exit_code == 0 and page.read_text().count("<h2>") == 2


def test_atomic_file_leaves_the_old_file_when_the_write_fails(tmp_path):
    from dataprep.io import atomic_file

    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [target]
    with atomic_file(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and sorted(tmp_path.iterdir()) == [target]


def test_cli_inspect_wrong_directory(records, runner):
    r = runner.invoke(cli, ["inspect", str(records)])
    assert r.exit_code == 1 and "not a `dataprep tokenize` output" in r.output


def test_fidelity_kept_rows_are_labelled_by_source_row_without_an_inspect_row_hint(tmp_path):
    """fidelity_kept.jsonl's `row` is the row of the source file, not an output row index: the report
    says so and does not point `inspect --row` at it (which would show another row)."""
    from dataprep.inspect_shards import fidelity_report

    out = tmp_path / "tok"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({
        "stage": "tokenize", "lineage": {"kind": "chat"}, "config": {"on_mismatch": "warn"},
        "fidelity": {"checked": 9, "mismatched": 1, "by_reason": {"prompt_seam": 1}}}))
    (out / "fidelity_kept.jsonl").write_text(json.dumps(
        {"source": "a.jsonl", "row": 7, "reasons": ["prompt_seam"], "detail": "assistant turn 1: prompt_seam"}) + "\n")
    report = fidelity_report(out)
    assert "rows kept with a mismatch (1; first 1; by source file and source row" in report
    assert "  a.jsonl row 7: prompt_seam: assistant turn 1: prompt_seam" in report
    assert "--row N" not in report and "shows one" not in report
