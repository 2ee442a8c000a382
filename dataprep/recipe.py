"""Recipes: one YAML file describing a whole pipeline, validated into frozen dataclasses.

A recipe has top-level keys `name`, `description`, `workdir`, `engine` and `ray_address` (the
default of every stage that takes them: convert, dedupe, tokenize) and one optional section per
stage (`convert`, `dedupe`, `filter`, `mix`, `split`, `tokenize`, `train`). A stage section's keys are exactly the
keyword options of that stage's library function: the fields of its config dataclass (its
`config_class`, dataprep.options) and its other keyword parameters. So a new option is usable
from recipes the day it is added, and it is checked as the stage function checks it (type,
choices, range). Every problem of a recipe (unknown or duplicate key, wrong type, value out of
range, missing field, unknown stage) is one line `FILE:LINE: key: problem`, and all of them are
reported at once.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from dataprep.engine import ENGINES
from dataprep.errors import DataprepError
from dataprep.options import MISSING, Option, problems, schema

STAGES = ("convert", "dedupe", "filter", "mix", "split", "tokenize", "train")
# stage -> "module:function"; the function's first parameter is its input, the second its output dir.
STAGE_FUNCTIONS = {
    "convert": "dataprep.convert:convert",
    "dedupe": "dataprep.dedupe:dedupe",
    "filter": "dataprep.filter:filter",
    "mix": "dataprep.mix:mix",
    "split": "dataprep.split:split",
    "tokenize": "dataprep.tokenize:tokenize",
    "train": "training.run:train",
}
# options of a stage function that the runner fills in itself
RUNNER_OWNED = {"out", "force", "progress"}
TOP_LEVEL = {"name": str, "description": str, "workdir": str, "engine": str, "ray_address": str}
ENGINE_KEYS = ("engine", "ray_address")  # top-level defaults for every stage that takes them (dataprep.engine)


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


def stage_parameters(stage: str) -> dict[str, Option]:
    """The options a recipe may set for `stage`: the stage function's keyword parameters after its
    input (but the runner's), and, when it has one, the options of its `config_class`."""
    func = stage_function(stage)
    hints = typing.get_type_hints(func)
    out = {}
    for p in list(inspect.signature(func).parameters.values())[1:]:
        if p.name not in RUNNER_OWNED and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            default = MISSING if p.default is p.empty else p.default
            out[p.name] = Option(p.name, p.name, hints.get(p.name, Any), default)
    config_class = getattr(func, "config_class", None)
    if config_class is not None:
        out.update(schema(config_class))
    return out


# ---------------------------------------------------------------- YAML with line numbers


class Problems:
    """The problems of one recipe, each `FILE:LINE: key: problem`, raised together in one error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[tuple[str, ...], int | None] = {}  # key path -> 1-based line (None: set by --set)
        self.found: list[tuple[int, str]] = []  # (line, message)

    def add(self, keys: tuple[str, ...], message: str) -> None:
        """A problem at the line of key path `keys` (or of its nearest parent; line None: from --set)."""
        while keys and keys not in self.lines:
            keys = keys[:-1]
        line = self.lines.get(keys)
        self.found.append((line or 0, f"{self.path}:{line}: {message}" if line else f"{self.path} (--set): {message}"))

    def raise_any(self) -> None:
        if self.found:
            raise DataprepError("\n".join(message for _, message in sorted(self.found, key=lambda f: f[0])))


def _load_yaml(path: Path, found: Problems) -> dict:
    """The recipe as plain data; notes the 1-based line of every mapping key (by key path) and
    every duplicate key in `found`."""
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except FileNotFoundError:
        raise DataprepError(f"recipe {path} not found; check the path") from None
    except IsADirectoryError:
        raise DataprepError(f"recipe {path} is a directory; pass a YAML file") from None
    except UnicodeDecodeError as exc:
        raise DataprepError(f"{path}: not UTF-8 text (byte {exc.start}); save the recipe as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise DataprepError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from None
    if not isinstance(data, dict):
        raise DataprepError(f"{path}: a recipe is a YAML mapping of stage sections (convert:, tokenize:, ...)")

    def walk(n, prefix):
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                keys, line = prefix + (str(k.value),), k.start_mark.line + 1
                if keys in found.lines:
                    found.found.append((line, f"{path}:{line}: {'.'.join(keys)}: duplicate key (first on line "
                                              f"{found.lines[keys]}); keep one"))
                else:
                    found.lines[keys] = line
                walk(v, keys)

    walk(node, ())
    return data


# ---------------------------------------------------------------- loading


def _apply_overrides(data: dict, overrides: list[str], found: Problems) -> dict:
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
        found.lines[tuple(parts)] = None  # its problems are the --set's
    return data


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read and validate a recipe; every problem is one line with the file, line and key, and all of
    them are raised together in one DataprepError."""
    path = Path(path)
    found = Problems(path)
    data = _apply_overrides(_load_yaml(path, found), overrides or [], found)
    for key, value in data.items():
        if key not in TOP_LEVEL and key not in STAGES:
            found.add((key,), f"{key}: unknown key; a recipe's top-level keys are {', '.join([*TOP_LEVEL, *STAGES])}")
        elif key in TOP_LEVEL and not isinstance(value, TOP_LEVEL[key]):
            found.add((key,), f"{key}: {value!r} has the wrong type; expected {TOP_LEVEL[key].__name__}")
    engine = {k: data[k] for k in ENGINE_KEYS if isinstance(data.get(k), str)}
    if engine.get("engine", "local") not in ENGINES:
        found.add(("engine",), f"engine: {engine['engine']!r} is not one of {', '.join(ENGINES)}")
    stages = tuple(_stage_config(s, data[s], found, engine) for s in STAGES if s in data)
    if not stages:
        found.found.append((0, f"{path}: the recipe has no stage; add at least one of {', '.join(STAGES)}"))
    elif stages[0] is not None and stages[0].input is None:  # None: a section already reported as malformed
        first = stages[0].stage
        found.add((first,), f"{first}: it is the first stage, so it needs `input:` (a file or directory)")
    name = data.get("name", path.stem)
    workdir = data.get("workdir", str(Path("runs") / str(name)))
    if isinstance(workdir, str) and Path(workdir).exists() and not Path(workdir).is_dir():
        found.add(("workdir",), f"workdir: {workdir} is a file; name a directory")
    found.raise_any()
    return Recipe(path=str(path), name=name, description=data.get("description", ""), workdir=workdir, stages=stages)


INPUT = Option("input", "input", str | list[str] | None, None)  # a stage's explicit input; None: the previous output


def _stage_config(stage: str, section: Any, found: Problems, engine: dict[str, str]) -> StageConfig | None:
    """A stage's validated options; the recipe's top-level `engine:`/`ray_address:` apply to each stage
    that takes them, unless the stage's section sets its own."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        found.add((stage,), f"{stage}: must be a mapping of options")
        return None
    params = {"input": INPUT, **stage_parameters(stage)}
    for key, message in problems(params, section, stage):
        found.add((stage, key), message)
    options = {**{k: v for k, v in engine.items() if k in params}, **{k: v for k, v in section.items() if k != "input"}}
    return StageConfig(stage=stage, input=section.get("input"), options=types.MappingProxyType(options))
