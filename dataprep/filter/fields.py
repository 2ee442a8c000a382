"""The texts a filter looks at, by field, and the per-row result every filter returns.

Fields of each kind (what `--fields` and `FIELD=N` options name):

- sft: `prompt` = instruction and input joined by a blank line, `answer` = output; the record
  columns `instruction`, `input`, `output` can be named too.
- chat: `prompt` = the user turns' contents, `answer` = the assistant turns' contents (each
  joined by a blank line; system and tool turns are in neither); `messages` = every turn.
- text and classify: `text`. preference: `prompt`, `answer` = chosen, `rejected`.

Any other string column of the input can be named as itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dataprep.errors import DataprepError

DEFAULT_FIELDS = {"sft": ("prompt", "answer"), "chat": ("prompt", "answer"), "text": ("text",),
                  "classify": ("text",), "preference": ("prompt", "answer"), "kto": ("prompt", "answer")}
_ROLES = {"prompt": ("user",), "answer": ("assistant",), "messages": None}


@dataclass
class FilterResult:
    """One filter over n rows: per row the reason it fails (None: passes), the value or score
    that decided, a detail (e.g. the detected language), and for passing rows how close they came
    to failing (`margin`, ≥ 0, smaller = closer; NaN where no threshold applies)."""

    reason: list[str | None]
    score: np.ndarray
    detail: list[str | None]
    margin: np.ndarray
    texts: dict[str, list[Any]] | None = None  # pii redact: replaced column values, by column
    flags: list[str | None] | None = None  # pii flag: the types found per row
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def empty(cls, n: int) -> FilterResult:
        return cls([None] * n, np.full(n, np.nan), [None] * n, np.full(n, np.nan))


def _joined(values) -> str:
    return "\n\n".join(v for v in values if v)


def available_fields(kind: str | None, columns: list[str]) -> list[str]:
    names = list(DEFAULT_FIELDS.get(kind or "", ()))
    if kind == "chat":
        names.append("messages")
    return names + [c for c in columns if c not in names and c not in ("source", "row")]


def check_fields(kind: str | None, columns: list[str], fields) -> None:
    known = available_fields(kind, columns)
    bad = [f for f in fields if f not in known]
    if bad:
        raise DataprepError(f"field(s) {', '.join(bad)} not in the input ({kind or 'unknown'} records); "
                            f"fields are: {', '.join(known)}")


def field_values(frame, kind: str | None, name: str) -> list[Any]:
    """One field of every row: a str, or for chat prompt/answer/messages the list of the turns' contents."""
    cols = frame.columns
    if kind == "chat" and name in _ROLES and "messages" in cols:
        roles = _ROLES[name]
        return [[m.get("content") or "" for m in (msgs or []) if roles is None or m.get("role") in roles]
                for msgs in frame.get_column("messages").to_list()]
    if kind == "sft" and name == "prompt" and "instruction" in cols:
        inp = frame.get_column("input").to_list() if "input" in cols else [None] * frame.height
        return [_joined((a or "", b or "")) for a, b in zip(frame.get_column("instruction").to_list(), inp, strict=True)]
    if kind == "sft" and name == "answer" and "output" in cols:
        name = "output"
    if kind in ("preference", "kto") and name == "answer":
        name = "chosen" if kind == "preference" else "completion"
    values = frame.get_column(name).to_list()
    return [v if isinstance(v, str) else ("" if v is None else str(v)) for v in values]


def as_text(value: Any) -> str:
    return _joined(value) if isinstance(value, list) else value


def field_texts(frame, kind: str | None, name: str) -> list[str]:
    return [as_text(v) for v in field_values(frame, kind, name)]


def parse_spec(items, what: str, cast=float) -> list[tuple[str | None, Any]]:
    """`("10",)` → [(None, 10)]: all fields; `("answer=10", "prompt=2")` → per field."""
    out = []
    for item in items or ():
        name, sep, value = str(item).rpartition("=") if "=" in str(item) else (None, "", str(item))
        try:
            v = cast(value)
        except ValueError:
            raise ValueError(f"{what} {item!r}: expected N or FIELD=N") from None
        if v < 0:
            raise ValueError(f"{what} {item!r}: must be ≥ 0")
        out.append((name or None, v))
    return out


def spec_check(what: str, cast=float):
    def check(items) -> str | None:
        try:
            parse_spec(items, what, cast)
        except ValueError as exc:
            return str(exc)
        return None

    return check


def per_field(spec, fields) -> dict[str, Any]:
    """The value of a parsed spec for each field (a value for all, overridden per field)."""
    out: dict[str, Any] = {}
    for name, v in spec:
        for f in ([name] if name else fields):
            out[f] = v
    return out
