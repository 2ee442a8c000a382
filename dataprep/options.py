"""Options declared once: a stage's options are the fields of one frozen dataclass, and each
field's `opt(...)` carries what both front ends need (help, range, choices; where the CLI
differs, its flag and a converter):

    @dataclass(frozen=True)
    class TokenizeOptions:
        max_len: int = opt(2048, "Maximum tokens per row (and per bin).", min=2)

- `click_options(TokenizeOptions)` adds `--max-len` (an IntRange, default shown) to a command;
- `parse_options(TokenizeOptions, kwargs, "tokenize")` is how the stage function takes its keyword
  options, and `problems(...)` is the same check for recipes, which list every problem at once.

The type comes from the annotation (int, float, bool, str, Literal, tuple/list of str, dict,
`X | None`). This module imports nothing heavy: the CLI imports every config class at startup.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import os
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

from dataprep.errors import DataprepError

MISSING = dataclasses.MISSING
PATHS = ("file", "existing-dir")
C = typing.TypeVar("C")


def opt(default: Any = MISSING, help: str = "", *, min: float | None = None, max: float | None = None,
        min_open: bool = False, choices: tuple | None = None, check: Callable[[Any], str | None] | None = None,
        name: str | None = None, flag: str | None = None, cli: Callable[[Any], Any] | None = None,
        multiple: bool = False, metavar: str | None = None, path: str | None = None) -> Any:
    """A config field and its metadata.

    min, max: inclusive bounds (`min_open`: the lower bound excluded). choices: the allowed values
    (of each item, for a list). check: value -> the problem (text) or None, for what a range or
    choices cannot say. name: the option's name for callers, recipes and the flag when it is not
    the field's. flag: the CLI flag when it is not --kebab-name (--no-kebab-name for a bool that
    defaults to True). cli: converts what click parsed (raises ValueError with the problem).
    multiple: the flag repeats. metavar: the CLI's placeholder. path: "file" or "existing-dir"
    (click checks the path).
    """
    assert path in (None, *PATHS), path
    meta = dict(help=help, min=min, max=max, min_open=min_open, choices=choices, check=check, name=name, flag=flag,
                cli=cli, multiple=multiple, metavar=metavar, path=path)
    return dataclasses.field(default=default, metadata={k: v for k, v in meta.items() if v is not None and v is not False and v != ""})


@dataclasses.dataclass(frozen=True)
class Option:
    """One option as callers, recipes and the CLI see it."""

    key: str  # the name callers, recipes and the flag use
    field: str  # the config dataclass field it fills
    type: Any  # the field's annotation
    default: Any = MISSING  # MISSING: required
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@functools.cache
def schema(config: type) -> dict[str, Option]:
    """The options of a config dataclass, by key."""
    hints = typing.get_type_hints(config)
    out = {}
    for f in dataclasses.fields(config):
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING)
        key = f.metadata.get("name", f.name)
        out[key] = Option(key, f.name, hints.get(f.name, Any), default, f.metadata)
    return out


# ---------------------------------------------------------------- checking values


def _members(annotation: Any) -> tuple:
    """The annotation's parts: `X | Y | None` -> (X, Y, NoneType); anything else -> (itself,)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _base(annotation: Any) -> Any:
    """The first part that is not None: `float | None` -> float, `str | Callable | None` -> str."""
    return next((a for a in _members(annotation) if a is not type(None)), annotation)


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(_base(annotation)) in (list, tuple, collections.abc.Sequence)


def fits(value: Any, annotation: Any) -> bool:
    """Whether `value` has the type of `annotation` (the subset config fields use)."""
    if annotation is Any:
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if origin is Literal:
        return value in args
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, (str, os.PathLike))
    if origin in (list, tuple, collections.abc.Sequence):
        item = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(fits(v, item) for v in value)
    if origin is dict or annotation is dict:
        kt, vt = args if args else (Any, Any)
        return isinstance(value, dict) and all(fits(k, kt) and fits(v, vt) for k, v in value.items())
    if origin is collections.abc.Callable or annotation is collections.abc.Callable:
        return callable(value)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _choices(o: Option) -> tuple | None:
    if "choices" in o.meta:
        return tuple(o.meta["choices"])
    literal = [a for a in _members(o.type) if typing.get_origin(a) is Literal]
    return typing.get_args(literal[0]) if literal else None


def _type_name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def _range_text(o: Option) -> str:
    lo, hi, opened = o.meta.get("min"), o.meta.get("max"), o.meta.get("min_open", False)
    what = "an int" if _base(o.type) is int else "a number"
    if lo is not None and hi is not None:
        return f"{what} in {'(' if opened else '['}{lo}, {hi}]"
    return f"{what} {'>' if opened else '≥'} {lo}" if lo is not None else f"{what} ≤ {hi}"


def _in_range(o: Option, value: float) -> bool:
    lo, hi = o.meta.get("min"), o.meta.get("max")
    if lo is not None and (value <= lo if o.meta.get("min_open") else value < lo):
        return False
    return hi is None or value <= hi


def problem(o: Option, value: Any) -> str | None:
    """What is wrong with `value` for option `o` (type, choices, range, the field's check), or None."""
    choices = _choices(o)
    if not fits(value, o.type):
        if choices and not isinstance(value, (list, tuple, dict)):
            return f"{value!r} is not one of {', '.join(map(str, choices))}"
        return f"{value!r} has the wrong type; expected {_type_name(o.type)}"
    if value is None:
        return None
    for item in value if isinstance(value, (list, tuple)) else (value,):
        if choices and item not in choices:
            return f"{item!r} is not one of {', '.join(map(str, choices))}"
    if ("min" in o.meta or "max" in o.meta) and not _in_range(o, value):
        return f"{value!r} is out of range; expected {_range_text(o)}"
    return o.meta["check"](value) if "check" in o.meta else None


def problems(options: Mapping[str, Option], values: Mapping[str, Any], label: str) -> list[tuple[str, str]]:
    """Every problem of `values` (unknown key, type, choices, range, check, a required key missing)
    as (key, "label.key: problem"), in the order of `values`, then the missing keys."""
    out = []
    for key, value in values.items():
        o = options.get(key)
        if o is None:
            out.append((key, f"{label}.{key}: unknown option; {label} takes {', '.join(options)}"))
        elif (p := problem(o, value)) is not None:
            out.append((key, f"{label}.{key}: {p}"))
    for key, o in options.items():
        if o.default is MISSING and key not in values:
            out.append((key, f"{label}.{key}: required; add it"))
    return out


def _normalized(value: Any, annotation: Any) -> Any:
    """Paths as str, lists as tuples for tuple fields (the config is frozen, so hashable)."""
    if isinstance(value, os.PathLike) and _base(annotation) is str:
        return os.fspath(value)
    if isinstance(value, list) and typing.get_origin(_base(annotation)) is tuple:
        return tuple(value)
    return value


def parse_options(config: type[C], values: Mapping[str, Any], label: str) -> C:
    """`values` (keyword options by key) checked into the `config` dataclass; any problem raises one
    one-line DataprepError that lists them all."""
    options = schema(config)
    bad = problems(options, values, label)
    if bad:
        raise DataprepError("; ".join(message for _, message in bad))
    return config(**{options[k].field: _normalized(v, options[k].type) for k, v in values.items()})


# ---------------------------------------------------------------- the CLI


def click_options(config: type, exclude: tuple[str, ...] = (), first: tuple[str, ...] = ()):
    """A decorator adding one click option per option of `config` (but `exclude`), in field order
    (`first` ahead). The command receives each under its key, ready to pass to the stage function."""

    def decorate(command):
        keys = [*first, *(k for k in schema(config) if k not in first and k not in exclude)]
        for key in reversed(keys):
            command = _click_option(schema(config)[key])(command)
        return command

    return decorate


def _click_option(o: Option):
    import click

    m, base = o.meta, _base(o.type)
    flag = m.get("flag")
    kwargs: dict[str, Any] = {"help": m.get("help", ""), "callback": _callback(o)}
    if base is bool:
        negative = o.default is True
        flag = flag or f"--{'no-' if negative else ''}{o.key.replace('_', '-')}"
        return click.option(flag, o.key, is_flag=True, flag_value=not negative, default=negative, **kwargs)
    choices, lo, hi = _choices(o), m.get("min"), m.get("max")
    default = None if o.default is MISSING else o.default
    if _is_list(o.type):
        kind, default = click.STRING, ",".join(default) if default else None
        if choices:
            kwargs["help"] += f" Any of: {', '.join(choices)}."
    elif m.get("multiple"):
        kind = click.STRING
    elif choices:
        kind = click.Choice(choices)
    elif base in (int, float) and (lo is not None or hi is not None):
        kind = (click.IntRange if base is int else click.FloatRange)(lo, hi, min_open=m.get("min_open", False))
    elif base in (int, float):
        kind = click.INT if base is int else click.FLOAT
    elif m.get("path"):
        kind = click.Path(dir_okay=False) if m["path"] == "file" else click.Path(exists=True, file_okay=False)
    else:
        kind = click.STRING
    return click.option(flag or f"--{o.key.replace('_', '-')}", o.key, type=kind, default=default,
                        show_default=default is not None, multiple=m.get("multiple", False),
                        metavar=m.get("metavar"), required=o.default is MISSING, **kwargs)


def _callback(o: Option):
    """Converts what click parsed (comma lists, the field's `cli`) and checks it like `problems` does."""

    def callback(ctx, param, value):
        import click

        if _is_list(o.type) and isinstance(value, str):
            value = tuple(v.strip() for v in value.split(",") if v.strip()) or (None if o.default is None else ())
        if o.meta.get("multiple") and value == ():  # a repeatable flag not given: the field's default
            value = None if o.default is MISSING else o.default
        try:
            if "cli" in o.meta and value is not None:
                value = o.meta["cli"](value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        p = problem(o, value)
        if p is not None:
            raise click.BadParameter(p)
        return value

    return callback
