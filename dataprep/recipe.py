"""Recipes: one YAML file describing a whole pipeline, validated into frozen dataclasses.

A recipe has top-level keys `name`, `description`, `workdir` and one optional section per
stage (`convert`, `dedupe`, `tokenize`, `train`). A stage section's keys are exactly the
keyword options of that stage's library function, so the recipe schema is the function's
signature: a new option is usable from recipes the day it is added, and an unknown key, a
wrong type or a missing required field is one line naming the key, the file and the line.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import importlib
import inspect
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from dataprep.errors import DataprepError

STAGES = ("convert", "dedupe", "tokenize", "train")
# stage -> "module:function"; the function's first parameter is its input, the second its output dir.
STAGE_FUNCTIONS = {
    "convert": "dataprep.convert:convert",
    "dedupe": "dataprep.dedupe:dedupe",
    "tokenize": "dataprep.tokenize:tokenize",
    "train": "training.run:train",
}
# options of a stage function that the runner fills in itself
RUNNER_OWNED = {"out", "force", "progress"}
TOP_LEVEL = {"name": str, "description": str, "workdir": str}


@dataclasses.dataclass(frozen=True)
class StageConfig:
    stage: str
    input: str | None  # an explicit input; None = the previous stage's output
    options: types.MappingProxyType  # validated keyword options of the stage function


@dataclasses.dataclass(frozen=True)
class Recipe:
    path: str
    name: str
    description: str
    workdir: str
    stages: tuple[StageConfig, ...]

    def stage(self, name: str) -> StageConfig | None:
        return next((s for s in self.stages if s.stage == name), None)


def stage_function(stage: str):
    module, func = STAGE_FUNCTIONS[stage].split(":")
    return getattr(importlib.import_module(module), func)


def stage_parameters(stage: str, section: dict | None = None) -> dict[str, inspect.Parameter]:
    """The options a recipe may set for `stage`: the stage function's keyword parameters after
    its input, plus, when it takes `**options`, the fields of its config dataclass (named by the
    function's `config_class`, a dataclass or a function of the recipe section that returns one)."""
    func = stage_function(stage)
    hints = typing.get_type_hints(func)
    out = {}
    takes_options = False
    for p in list(inspect.signature(func).parameters.values())[1:]:
        takes_options |= p.kind == p.VAR_KEYWORD
        if p.name in RUNNER_OWNED or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[p.name] = p.replace(annotation=hints.get(p.name, Any))
    config_class = getattr(func, "config_class", None)
    if takes_options and config_class is not None:
        if not dataclasses.is_dataclass(config_class):
            config_class = config_class(section or {})
        hints = typing.get_type_hints(config_class)
        for f in dataclasses.fields(config_class):
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else inspect.Parameter.empty)
            out[f.name] = inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=hints.get(f.name, Any))
    return out


# ---------------------------------------------------------------- YAML with line numbers


def _load_yaml(path: Path) -> tuple[dict, dict[tuple[str, ...], int]]:
    """The recipe as plain data, and the 1-based line of every mapping key (by key path)."""
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except FileNotFoundError:
        raise DataprepError(f"recipe {path} not found; check the path") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise DataprepError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from None
    if not isinstance(data, dict):
        raise DataprepError(f"{path}: a recipe is a YAML mapping of stage sections (convert:, tokenize:, ...)")
    lines: dict[tuple[str, ...], int] = {}

    def walk(n, prefix):
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                lines[prefix + (str(k.value),)] = k.start_mark.line + 1
                walk(v, prefix + (str(k.value),))

    walk(node, ())
    return data, lines


# ---------------------------------------------------------------- type checking


def _check_type(value: Any, annotation: Any) -> bool:
    """Whether a YAML value fits a parameter annotation (the subset stage functions use)."""
    if annotation in (Any, inspect.Parameter.empty):
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_check_type(value, a) for a in args)
    if origin is Literal:
        return value in args
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple, collections.abc.Sequence):
        item = args[0] if args else Any
        return isinstance(value, list) and all(_check_type(v, item) for v in value)
    if origin is dict or annotation is dict:
        kt, vt = args if args else (Any, Any)
        return isinstance(value, dict) and all(_check_type(k, kt) and _check_type(v, vt) for k, v in value.items())
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _type_name(annotation: Any) -> str:
    return str(annotation).replace("typing.", "") if not isinstance(annotation, type) else annotation.__name__


# ---------------------------------------------------------------- loading


def _apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`--set stage.key=value`: the value is read as YAML (so numbers, booleans and lists work)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise DataprepError(f"--set {item!r}: write it as stage.key=value, e.g. --set tokenize.max_len=512")
        section = data.setdefault(parts[0], {})
        if not isinstance(section, dict):
            raise DataprepError(f"--set {item!r}: {parts[0]} is not a stage section of the recipe")
        section[parts[1]] = yaml.safe_load(raw) if raw.strip() else None
    return data


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read and validate a recipe; every problem is one line with the file, line and key."""
    path = Path(path)
    data, lines = _load_yaml(path)
    data = _apply_overrides(data, overrides or [])

    def where(*keys: str) -> str:
        line = lines.get(tuple(keys))
        return f"{path}:{line}" if line else f"{path} (--set)"

    for key, value in data.items():
        if key not in TOP_LEVEL and key not in STAGES:
            known = ", ".join([*TOP_LEVEL, *STAGES])
            raise DataprepError(f"{where(key)}: unknown key {key!r}; a recipe's top-level keys are {known}")
        if key in TOP_LEVEL and not isinstance(value, TOP_LEVEL[key]):
            raise DataprepError(f"{where(key)}: {key} must be a {TOP_LEVEL[key].__name__}")
    stages = tuple(_stage_config(s, data[s], where) for s in STAGES if s in data)
    if not stages:
        raise DataprepError(f"{path}: the recipe has no stage; add at least one of {', '.join(STAGES)}")
    name = data.get("name", path.stem)
    return Recipe(
        path=str(path),
        name=name,
        description=data.get("description", ""),
        workdir=data.get("workdir", str(Path("runs") / name)),
        stages=stages,
    )


def _stage_config(stage: str, section: Any, where) -> StageConfig:
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise DataprepError(f"{where(stage)}: {stage} must be a mapping of options")
    section = dict(section)
    params = stage_parameters(stage, section)
    explicit_input = section.pop("input", None)
    if explicit_input is not None and not isinstance(explicit_input, (str, list)):
        raise DataprepError(f"{where(stage, 'input')}: {stage}.input must be a path")
    for key, value in section.items():
        if key not in params:
            raise DataprepError(
                f"{where(stage, key)}: unknown key {stage}.{key}; {stage} takes {', '.join(['input', *params])}"
            )
        if not _check_type(value, params[key].annotation):
            raise DataprepError(
                f"{where(stage, key)}: {stage}.{key} = {value!r} has the wrong type; expected {_type_name(params[key].annotation)}"
            )
    for key, p in params.items():
        if p.default is inspect.Parameter.empty and key not in section:
            raise DataprepError(f"{where(stage)}: {stage} needs {key!r}; add `{key}: ...` to the {stage} section")
    return StageConfig(stage=stage, input=explicit_input, options=types.MappingProxyType(section))
