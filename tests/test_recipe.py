"""Recipe validation: the schema is the stage function's options; each error is `FILE:LINE: key: problem`."""

from __future__ import annotations

import sys
import types
from typing import Literal

import pytest

from dataprep import recipe as recipe_mod
from dataprep.errors import DataprepError
from dataprep.recipe import load_recipe


def fake_convert(sources: str | list[str], out: str, *, kind: Literal["sft", "chat"] = "sft",
                 template: str | None = None, mapping: dict[str, str] | None = None, force: bool = False) -> dict:
    return {}


def fake_tokenize(path: str, out: str, *, tokenizer: str = "smollm2-135m", max_len: int = 2048,
                  pack: bool = False, force: bool = False) -> dict:
    return {}


@pytest.fixture(autouse=True)
def fake_stages(monkeypatch):
    module = types.ModuleType("fake_stages")
    module.convert, module.tokenize = fake_convert, fake_tokenize
    monkeypatch.setitem(sys.modules, "fake_stages", module)
    monkeypatch.setattr(recipe_mod, "STAGE_FUNCTIONS", {"convert": "fake_stages:convert", "tokenize": "fake_stages:tokenize"})
    monkeypatch.setattr(recipe_mod, "STAGES", ("convert", "tokenize"))


def write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


GOOD = """\
# a comment line
name: demo
convert:
  input: data.csv
  template: latex
  mapping: {instruction: English, output: LaTeX}
tokenize:
  max_len: 512
  pack: true
"""


def test_valid_recipe_loads_into_frozen_config(tmp_path):
    r = load_recipe(write(tmp_path, GOOD))
    assert r.name == "demo" and r.workdir == "runs/demo"
    assert [s.stage for s in r.stages] == ["convert", "tokenize"]
    assert r.stage("convert").input == "data.csv"
    assert dict(r.stage("tokenize").options) == {"max_len": 512, "pack": True}
    with pytest.raises(TypeError):
        r.stage("tokenize").options["max_len"] = 1


def test_unknown_key_names_key_file_and_line(tmp_path):
    path = write(tmp_path, GOOD.replace("  max_len: 512", "  max_length: 512"))
    with pytest.raises(DataprepError) as err:
        load_recipe(path)
    assert str(err.value).startswith(f"{path}:8: tokenize.max_length: unknown option")
    assert "max_len" in str(err.value)


def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path, GOOD + "tokenise: {}\n")
    with pytest.raises(DataprepError, match=r"r.yaml:10: tokenise: unknown key"):
        load_recipe(path)


@pytest.mark.parametrize(
    "old,new,key,problem",
    [("max_len: 512", "max_len: many", "tokenize.max_len", "'many' has the wrong type; expected int"),
     ("pack: true", "pack: 3", "tokenize.pack", "3 has the wrong type; expected bool"),
     ("template: latex", "template: [a]", "convert.template", r"\['a'\] has the wrong type"),
     ("template: latex", "kind: vision", "convert.kind", "'vision' is not one of sft, chat")],
)
def test_wrong_type_names_key_and_line(tmp_path, old, new, key, problem):
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(DataprepError, match=rf"r.yaml:\d+: {key}: {problem}"):
        load_recipe(path)


def test_set_overrides_are_typed_and_validated(tmp_path):
    path = write(tmp_path, GOOD)
    r = load_recipe(path, ["tokenize.max_len=128", "convert.template=alpaca"])
    assert r.stage("tokenize").options["max_len"] == 128
    assert r.stage("convert").options["template"] == "alpaca"
    with pytest.raises(DataprepError, match=r"\(--set\): tokenize.bogus: unknown option"):
        load_recipe(path, ["tokenize.bogus=1"])
    with pytest.raises(DataprepError, match="stage.key=value"):
        load_recipe(path, ["max_len=1"])


def test_bad_yaml_names_line(tmp_path):
    path = write(tmp_path, "convert:\n  input: [a\n")
    with pytest.raises(DataprepError, match=r"r.yaml:\d+: not valid YAML"):
        load_recipe(path)


def test_options_from_a_config_dataclass(tmp_path, monkeypatch):
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        threshold: float = 0.9
        methods: tuple[str, ...] = ("exact",)

    def dedupe(path: str, out: str, *, force: bool = False, **options) -> dict:
        return {}

    dedupe.config_class = Cfg
    sys.modules["fake_stages"].dedupe = dedupe
    monkeypatch.setattr(recipe_mod, "STAGE_FUNCTIONS", {**recipe_mod.STAGE_FUNCTIONS, "dedupe": "fake_stages:dedupe"})
    monkeypatch.setattr(recipe_mod, "STAGES", ("convert", "dedupe", "tokenize"))
    path = write(tmp_path, GOOD + "dedupe:\n  threshold: 0.95\n  methods: [exact, near]\n")
    assert dict(load_recipe(path).stage("dedupe").options) == {"threshold": 0.95, "methods": ["exact", "near"]}
    path.write_text(GOOD + "dedupe:\n  threshold: high\n")
    with pytest.raises(DataprepError, match=r"r.yaml:11: dedupe.threshold: 'high' has the wrong type"):
        load_recipe(path)


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_first_stage_without_input_is_reported_by_validate_and_run(command, runner, tmp_path):
    """One check (load_recipe's), which both commands go through: one Error line, nothing run."""
    from dataprep.cli import cli

    (tmp_path / "r.yaml").write_text(f"workdir: {tmp_path / 'w'}\nconvert:\n  kind: sft\n")
    result = runner.invoke(cli, [command, str(tmp_path / "r.yaml")])
    assert result.exit_code != 0
    assert "convert: it is the first stage, so it needs `input:` (a file or directory)" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "w").exists()
