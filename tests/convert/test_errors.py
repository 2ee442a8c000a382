"""Fatal errors: one line naming the problem and the fix, non-zero exit, nothing written."""

from __future__ import annotations

import gzip

import pytest

from dataprep.cli import cli
from dataprep.convert import convert
from dataprep.errors import DataprepError


def _fails(runner, tmp_path, args, *needles):
    out = tmp_path / "out"
    result = runner.invoke(cli, ["convert", *map(str, args), "-o", str(out)])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temp dir left either
    return lines[0]


def test_missing_file(runner, tmp_path):
    _fails(runner, tmp_path, [tmp_path / "nope.csv"], "nope.csv does not exist")


def test_unparseable_json_names_line(runner, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[\n{"instruction": "a", "output": "b"},\n{"instruction": "c", "output": }\n]\n')
    _fails(runner, tmp_path, [bad], "not valid JSON at line 3")


def test_unparseable_jsonl_names_line(runner, tmp_path):
    bad = tmp_path / "bad.jsonl.gz"
    with gzip.open(bad, "wt") as fh:
        fh.write('{"instruction": "a", "output": "b"}\n\n{"instruction": "c", "output": "d"\n')
    _fails(runner, tmp_path, [bad], "not valid JSON at line 3")


def test_ragged_csv_names_line(runner, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("instruction,output\na,b\nc,d\ne,f,g,h\n")
    _fails(runner, tmp_path, [bad], "cannot parse", "at line 4")


def test_unclosed_quote_names_the_line_it_opens(runner, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text('instruction,output\na,b\n"c,d\ne,f\n')
    _fails(runner, tmp_path, [bad], "cannot parse", "at line 3")


def test_mapped_column_missing_lists_columns(runner, tmp_path, shared_data):
    _fails(runner, tmp_path, [shared_data / "english_to_latex.csv", "--map", "instruction=goal"],
           "no column 'goal'", "columns are: English, LaTeX")


def test_no_column_for_required_field(runner, tmp_path, shared_data):
    _fails(runner, tmp_path, [shared_data / "english_to_latex.csv", "--template", "alpaca"],
           "no column for sft field 'instruction'", "--map instruction=COLUMN")


def test_unknown_template_field(runner, tmp_path, shared_data):
    _fails(runner, tmp_path, [shared_data / "alpaca_en_demo.json", "--template", "Q: {question}\\nA:"],
           "template field {question} is not a column", "columns are: instruction, input, output")


def test_unknown_template_name(runner, tmp_path, shared_data):
    _fails(runner, tmp_path, [shared_data / "alpaca_en_demo.json", "--template", "vicuna"],
           "unknown template 'vicuna'", "alpaca, ko-alpaca, latex")


def test_template_for_other_kind(runner, tmp_path, shared_data):
    _fails(runner, tmp_path, [shared_data / "c4_demo.jsonl", "--kind", "text", "--template", "alpaca"],
           "--template applies to --kind sft only")


def test_map_to_unknown_field(runner, tmp_path, shared_data):
    _fails(runner, tmp_path, [shared_data / "c4_demo.jsonl", "--kind", "text", "--map", "body=text"],
           "text records have no field body")


def test_bad_row_fn(runner, tmp_path, shared_data):
    _fails(runner, tmp_path, [shared_data / "c4_demo.jsonl", "--row-fn", "no_such_module_xyz:f"],
           "cannot import no_such_module_xyz")


def test_missing_label_names_file(runner, tmp_path, shared_data):
    _fails(runner, tmp_path, [shared_data / "anime_with_synopsis.csv", "--kind", "classify",
                              "--label-names", tmp_path / "labels.txt"], "labels.txt does not exist")


def test_unknown_format_suffix(runner, tmp_path):
    odd = tmp_path / "data.xlsx"
    odd.write_bytes(b"PK")
    _fails(runner, tmp_path, [odd], "cannot tell the format")


def test_output_is_an_unrelated_directory(tmp_path, shared_data):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DataprepError, match="not a dataprep output"):
        convert([str(shared_data / "english_to_latex.csv")], out, template="latex")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_hub_offline_is_one_clear_line(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing to fall back on
    _fails(runner, tmp_path, ["hub:dataprep-test/not-cached:train"], "cannot load Hub dataset dataprep-test/not-cached")


def test_empty_input(runner, tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    _fails(runner, tmp_path, [empty], "no rows to convert")


def test_wrong_kind_gets_a_hint(runner, tmp_path, shared_data):
    _fails(runner, tmp_path, [shared_data / "glaive_toolcall_en_demo.json"],
           "no column for sft field 'instruction'", "look like --kind chat")
    _fails(runner, tmp_path, [shared_data / "dpo_en_demo.json", "--kind", "text"], "look like --kind preference")
