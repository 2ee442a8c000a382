"""The convert stage as a whole: manifest, fingerprint skip and --force, atomic writes, CLI options."""

from __future__ import annotations

import json

import polars as pl
import pytest

from dataprep.cli import cli
from dataprep.convert import RecordWriter, convert
from dataprep.errors import DataprepError
from dataprep.stage import read_manifest
from dataprep.templates import TEMPLATES, get_template, render_prompt
from tests.conftest import REPO

DEMO = str(REPO / "recipes" / "data" / "demo_latex.csv")


def test_manifest_and_rerun_skip_and_force(tmp_path, runner):
    out = tmp_path / "o"
    result = runner.invoke(cli, ["convert", DEMO, "--template", "latex", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "in 62 = out 62 + rejected 0" in result.output
    m = read_manifest(out)
    assert m.stage == "convert" and m.lineage.kind == "sft" and m.counts.n_in == 62
    assert m.inputs[0]["path"] == DEMO and len(m.inputs[0]["sha256"]) == 64
    assert m.config["template"]["name"] == "latex" and set(m.timings) == {"read", "convert", "write"}
    assert (out / "rejects.jsonl").read_text() == ""
    again = runner.invoke(cli, ["convert", DEMO, "--template", "latex", "-o", str(out)])
    assert "up to date" in again.output and "skipped" in again.output
    forced = runner.invoke(cli, ["convert", DEMO, "--template", "latex", "-o", str(out), "--force"])
    assert "in 62 = out 62" in forced.output
    (out / "records.parquet").unlink()  # a manifest without its data is not up to date
    redone = runner.invoke(cli, ["convert", DEMO, "--template", "latex", "-o", str(out)])
    assert "in 62 = out 62" in redone.output and (out / "records.parquet").is_file()
    other = runner.invoke(cli, ["convert", DEMO, "--template", "latex", "-o", str(out), "--format", "jsonl"])
    assert "in 62" in other.output and (out / "records.jsonl").is_file() and not (out / "records.parquet").exists()


def test_changed_input_content_is_not_skipped(tmp_path):
    src = tmp_path / "d.csv"
    src.write_text("English,LaTeX\none,1\n")
    first = convert([str(src)], tmp_path / "o", template="latex")
    src.write_text("English,LaTeX\none,1\ntwo,2\n")
    second = convert([str(src)], tmp_path / "o", template="latex")
    assert not second.skipped and second.fingerprint != first.fingerprint
    assert second.counts.n_out == 2


def test_failed_write_leaves_no_output(tmp_path, monkeypatch):
    def boom(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(RecordWriter, "write", boom)
    with pytest.raises(KeyboardInterrupt):
        convert([DEMO], tmp_path / "o", template="latex")
    assert list(tmp_path.iterdir()) == []


def test_failed_rerun_keeps_the_previous_output(tmp_path, monkeypatch):
    convert([DEMO], tmp_path / "o", template="latex")
    before = (tmp_path / "o" / "records.parquet").read_bytes()
    monkeypatch.setattr(RecordWriter, "write", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk full")))
    with pytest.raises(RuntimeError):
        convert([DEMO], tmp_path / "o", template="latex", force=True)
    assert (tmp_path / "o" / "records.parquet").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_custom_format_string_uses_any_column(tmp_path, runner, shared_data):
    out = tmp_path / "o"
    result = runner.invoke(cli, ["convert", str(shared_data / "anime_with_synopsis.csv"), "--template",
                                 "Title: {Name}\\nGenres: {Genres}\\nSynopsis:", "--map", "output=synopsis",
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    rec = pl.read_parquet(out / "records.parquet").row(0, named=True)
    assert rec["prompt"] == "Title: Cowboy Bebop\nGenres: Action, Adventure, Comedy, Drama, Sci-Fi, Space\nSynopsis:"
    assert rec["completion"].startswith("In the year 2071") and rec["instruction"] is None


def test_template_file(tmp_path):
    f = tmp_path / "qa.yaml"
    f.write_text('with_input: "Q: {instruction}\\nContext: {input}\\nA:"\nwithout_input: "Q: {instruction}\\nA:"\n'
                 'completion_prefix: " "\n')
    t = get_template(str(f))
    assert render_prompt({"instruction": "Why?", "input": ""}, t) == "Q: Why?\nA:"
    assert render_prompt({"instruction": "Why?", "input": "sky"}, t) == "Q: Why?\nContext: sky\nA:"
    src = tmp_path / "d.jsonl"
    src.write_text('{"instruction": "Why?", "input": "sky", "output": "Rayleigh"}\n')
    convert([str(src)], tmp_path / "o", template=str(f))
    rec = pl.read_parquet(tmp_path / "o" / "records.parquet").row(0, named=True)
    assert (rec["prompt"], rec["completion"]) == ("Q: Why?\nContext: sky\nA:", " Rayleigh")


def test_render_prompt_matches_the_vectorised_prompts(tmp_path, shared_data):
    convert([str(shared_data / "alpaca_en_demo.json")], tmp_path / "o", template="alpaca")
    df = pl.read_parquet(tmp_path / "o" / "records.parquet")
    assert all(render_prompt(r, TEMPLATES["alpaca"]) == r["prompt"] for r in df.head(50).iter_rows(named=True))


def test_literal_braces_in_a_template():
    assert render_prompt({"instruction": "x"}, "Wrap {instruction} in {{braces}}") == "Wrap x in {braces}"


def test_row_fn_from_a_file(tmp_path, runner, shared_data):
    fn = tmp_path / "piqa_like.py"
    fn.write_text("def to_sft(row):\n"
                  "    if 'Fantasy' in row['Genres']:\n        raise ValueError('no fantasy today')\n"
                  "    return {'instruction': 'Describe ' + row['Name'], 'output': row['synopsis']}\n")
    out = tmp_path / "o"
    result = runner.invoke(cli, ["convert", str(shared_data / "anime_with_synopsis.csv"), "--row-fn",
                                 f"{fn}:to_sft", "-o", str(out)])
    assert result.exit_code == 0, result.output
    m = read_manifest(out)
    n_fantasy = pl.read_csv(shared_data / "anime_with_synopsis.csv")["Genres"].str.contains("Fantasy").sum()
    assert m.counts.by_reason == {"row-fn error: ValueError": n_fantasy}
    details = {json.loads(x)["detail"] for x in (out / "rejects.jsonl").read_text().splitlines()}
    assert details == {"no fantasy today"}
    assert m.counts.n_out == 269 - n_fantasy and m.config["row_fn"]["sha256"]
    rec = pl.read_parquet(out / "records.parquet").row(0, named=True)
    assert rec["instruction"] == "Describe Cowboy Bebop" and rec["row"] == 0


def test_bad_map_syntax(runner, tmp_path):
    result = runner.invoke(cli, ["convert", DEMO, "--map", "instruction", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "FIELD=COLUMN" in result.output and not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind, src", [("chat", "glaive_toolcall_en_demo.json"), ("preference", "dpo_en_demo.json")])
def test_jsonl_and_parquet_read_back_the_same(tmp_path, shared_data, kind, src):
    from dataprep.io import read_records

    convert([str(shared_data / src)], tmp_path / "j", kind=kind, fmt="jsonl")
    convert([str(shared_data / src)], tmp_path / "p", kind=kind)
    a, b = read_records(tmp_path / "j"), read_records(tmp_path / "p")
    ma, mb = read_manifest(tmp_path / "j"), read_manifest(tmp_path / "p")
    assert a.equals(b) and ma.lineage.kind == mb.lineage.kind == kind and a.height == 300


@pytest.mark.parametrize("src, kind", [("alpaca_en_demo.json", "sft"), ("english_to_latex.csv", "sft"),
                                       ("anime_with_synopsis.csv", "classify")])
def test_small_batches_give_the_same_output(tmp_path, shared_data, src, kind):
    import pyarrow.parquet as pq

    opts = {"template": "latex"} if src.endswith("latex.csv") else {}
    if kind == "classify":
        opts = {"mapping": {"text": "synopsis", "labels": "Genres"}}
    whole = convert([str(shared_data / src)], tmp_path / "a", kind=kind, **opts)
    batched = convert([str(shared_data / src)], tmp_path / "b", kind=kind, batch_rows=7, **opts)
    a, b = (pl.read_parquet(tmp_path / d / "records.parquet") for d in "ab")
    assert a.equals(b) and b["row"].to_list() == list(range(b.height))
    assert pq.ParquetFile(tmp_path / "b" / "records.parquet").num_row_groups == -(-b.height // 7)
    for key in ("counts", "length_stats", "label_names", "label_counts"):
        assert whole.get(key) == batched.get(key)


def test_rejects_keep_their_rows_across_batches(tmp_path):
    src = str(REPO / "tests" / "assets" / "sft_bad.jsonl")
    m = convert([src], tmp_path / "o", batch_rows=2)
    rejects = [json.loads(line) for line in (tmp_path / "o" / "rejects.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rejects] == [1, 2, 3, 4, 6] and m.counts.n_out == 2


def test_csv_error_after_the_first_batch_leaves_no_output(tmp_path):
    src = tmp_path / "d.csv"
    src.write_text("English,LaTeX\n" + "x squared,x^2\n" * 300 + "bad,row,here\n")
    with pytest.raises(DataprepError, match="at line 302"):
        convert([str(src)], tmp_path / "o", template="latex", batch_rows=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]


def test_row_fn_that_exits_rejects_its_rows_and_the_run_goes_on(tmp_path, runner):
    fn = tmp_path / "exits.py"
    fn.write_text("import sys\n\ndef f(row):\n    if row['x'] == 'bad':\n        sys.exit(3)\n"
                  "    return {'text': row['x']}\n")
    src = tmp_path / "rows.jsonl"
    src.write_text('{"x": "good"}\n{"x": "bad"}\n')
    result = runner.invoke(cli, ["convert", str(src), "--kind", "text", "--row-fn", f"{fn}:f", "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "in 2 = out 1 + rejected 1 (row-fn error: SystemExit: 1)" in result.output


def test_editing_a_module_the_row_fn_imports_makes_the_output_out_of_date(tmp_path):
    """Each run in its own process, as on the command line (an imported module stays cached in one)."""
    import os
    import subprocess
    import sys

    (tmp_path / "rows.jsonl").write_text('{"x": "a"}\n')
    (tmp_path / "fn.py").write_text("import helper\n\ndef f(row):\n    return {'text': helper.WORD}\n")

    def run(word: str) -> str:
        (tmp_path / "helper.py").write_text(f"WORD = {word!r}\n")
        done = subprocess.run([sys.executable, "-m", "dataprep", "convert", "rows.jsonl", "--kind", "text",
                               "--row-fn", "fn.py:f", "-o", "o"], cwd=tmp_path, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr
        return pl.read_parquet(tmp_path / "o" / "records.parquet")["text"].to_list()[0]

    assert run("first") == "first"
    assert run("second") == "second"  # not "up to date": helper.py's hash is in the fingerprint
    assert set(read_manifest(tmp_path / "o").config["row_fn"]["imports"]) == {"helper"}


def _texts(out) -> list[str]:
    return pl.read_parquet(out / "records.parquet")["text"].to_list()


@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    """write(name=source, ...): the user's modules in tmp_path (the working directory, on sys.path),
    next to a one-row rows.jsonl whose path it returns (as convert's sources); forgotten by
    sys.modules after the test."""
    import sys

    written: list[str] = []

    def write(**modules: str) -> list[str]:
        (tmp_path / "rows.jsonl").write_text('{"x": "a"}\n')
        for name, source in modules.items():
            (tmp_path / f"{name}.py").write_text(source)
            written.append(name)
        return [str(tmp_path / "rows.jsonl")]

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield write
    for name in written:
        sys.modules.pop(name, None)


def test_two_row_fn_specs_on_one_file_both_fingerprint_its_helper(tmp_path, user_modules):
    """`fn.py:g` after `fn.py:f`, with the helper already imported by the caller's own code: both
    fingerprints name the helper (read from the loaded module, not from what its import newly
    loaded), and an edited helper, once loaded anew, makes the output out of date."""
    import importlib

    rows = user_modules(helper_two="WORD = 'w'\n", fn_two="from helper_two import WORD\n\n\ndef f(row):\n"
                        "    return {'text': WORD}\n\n\ndef g(row):\n    return {'text': WORD + '!'}\n")
    helper = importlib.import_module("helper_two")  # the caller's script imported it before convert()
    f = convert(rows, tmp_path / "f", kind="text", row_fn="fn_two.py:f")
    g = convert(rows, tmp_path / "g", kind="text", row_fn="fn_two.py:g")
    assert (_texts(tmp_path / "f"), _texts(tmp_path / "g")) == (["w"], ["w!"])
    (tmp_path / "helper_two.py").write_text("WORD = 'edited'\n")
    importlib.reload(helper)
    edited = convert(rows, tmp_path / "g", kind="text", row_fn="fn_two.py:g")
    assert set(f.config["row_fn"]["imports"]) == set(g.config["row_fn"]["imports"]) == {"helper_two"}
    assert not edited.skipped and _texts(tmp_path / "g") == ["edited!"]
    assert edited.config["row_fn"]["imports"]["helper_two"] != g.config["row_fn"]["imports"]["helper_two"]


@pytest.mark.parametrize(("spec", "edit"), [("fn_ed.py:g", "helper_ed"), ("fn_ed:g", "helper_ed"), ("fn_ed:g", "fn_ed")])
def test_a_row_fn_source_edited_in_the_process_that_imported_it_is_an_error(tmp_path, user_modules, spec, edit):
    """The module stays cached, so the code that would run is the old one: recording the edited
    file's hash would call the old code's output current (and a fresh process would then skip)."""
    rows = user_modules(helper_ed="WORD = 'w'\n", fn_ed="from helper_ed import WORD\n\n\ndef g(row):\n"
                        "    return {'text': WORD + '!'}\n")
    first = convert(rows, tmp_path / "o", kind="text", row_fn=spec)
    (tmp_path / f"{edit}.py").write_text((tmp_path / f"{edit}.py").read_text().replace("'w'", "'x'").replace("'!'", "'?'"))
    with pytest.raises(DataprepError, match=rf"{edit}\.py changed since this process imported it; restart"):
        convert(rows, tmp_path / "o", kind="text", row_fn=spec)
    assert read_manifest(tmp_path / "o").fingerprint == first.fingerprint and _texts(tmp_path / "o") == ["w!"]


def test_a_row_fn_object_from_a_file_fingerprints_its_file_and_helper(tmp_path, user_modules):
    """A function object (not a spec) loaded from a file path: its module is not in sys.modules."""
    from dataprep.convert import load_row_fn
    from dataprep.io import sha256_path

    rows = user_modules(helper_obj="WORD = 'w'\n", fn_obj="import helper_obj\n\ndef f(row):\n"
                        "    return {'text': helper_obj.WORD}\n")
    m = convert(rows, tmp_path / "o", kind="text", row_fn=load_row_fn(f"{tmp_path / 'fn_obj.py'}:f"))
    assert m.config["row_fn"] == {"name": "fn_obj:f", "sha256": sha256_path(tmp_path / "fn_obj.py"),
                                  "imports": {"helper_obj": sha256_path(tmp_path / "helper_obj.py")}}


def test_a_row_fn_module_loaded_twice_in_one_process_is_still_current(tmp_path, user_modules):
    """The second load finds its modules cached (nothing newly imported): the fingerprint must not change."""
    rows = user_modules(helper_twice="WORD = 'w'\n", fn_twice="import helper_twice\n\ndef f(row):\n"
                        "    return {'text': helper_twice.WORD}\n")
    first = convert(rows, tmp_path / "o", kind="text", row_fn="fn_twice:f")
    again = convert(rows, tmp_path / "o", kind="text", row_fn="fn_twice:f")
    assert not first.skipped and again.skipped
    assert set(first.config["row_fn"]["imports"]) == {"helper_twice"}
