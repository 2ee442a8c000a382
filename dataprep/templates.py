"""Prompt templates, registered in one place as data.

A template has two format strings (with and without `input`), an optional prefix for the
completion (the `latex` template's completion starts with a space), and the source column
names it expects by default. Fields are `{name}`: a canonical field (instruction, input,
output) or any column of the source. `render_prompt` renders one record in Python;
`prompt_expr` builds the same string as one vectorised polars expression.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from pathlib import Path

from dataprep.errors import DataprepError

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
KO_ALPACA_WITH_INPUT = (
    "아래는 문제를 설명하는 지시사항과, 구체적인 답변을 방식을 요구하는 입력이 함께 있는 문장입니다. "
    "이 요청에 대해 적절하게 답변해주세요.\n###입력:{input}\n###지시사항:{instruction}\n###답변:"
)
KO_ALPACA_NO_INPUT = (
    "아래는 문제를 설명하는 지시사항입니다. 이 요청에 대해 적절하게 답변해주세요.\n###지시사항:{instruction}\n###답변:"
)
LATEX = "Convert English to LaTeX\nEnglish: {instruction}\nLaTeX:"


@dataclass(frozen=True)
class Template:
    """A prompt template: format strings with/without input, completion prefix, default column names."""

    name: str
    with_input: str
    without_input: str
    completion_prefix: str = ""
    # canonical field -> source column names tried (case-insensitively) before the generic defaults
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def fields(self) -> set[str]:
        return format_fields(self.with_input) | format_fields(self.without_input)

    def as_config(self) -> dict:
        return {"name": self.name, "with_input": self.with_input, "without_input": self.without_input,
                "completion_prefix": self.completion_prefix}


TEMPLATES: dict[str, Template] = {
    "alpaca": Template("alpaca", ALPACA_WITH_INPUT, ALPACA_NO_INPUT),
    "ko-alpaca": Template("ko-alpaca", KO_ALPACA_WITH_INPUT, KO_ALPACA_NO_INPUT),
    "latex": Template("latex", LATEX, LATEX, completion_prefix=" ",
                      aliases={"instruction": ("English",), "output": ("LaTeX",)}),
}


def format_fields(fmt: str) -> set[str]:
    """The `{field}` names of a format string; `{{` and `}}` are literal braces."""
    return {name for _, name, _, _ in _parse(fmt) if name is not None}


def _parse(fmt: str) -> list[tuple[str, str | None, str, str | None]]:
    try:
        parts = list(string.Formatter().parse(fmt))
    except ValueError as exc:
        raise DataprepError(f"template {fmt[:40]!r} is not a valid format string ({exc}); write fields as {{column}}") from None
    for _, name, spec, conv in parts:
        if name is not None and (not name.isidentifier() and not name.replace(" ", "_").isidentifier()):
            raise DataprepError(f"template field {{{name}}} is not a column name; write fields as {{column}}")
        if spec or conv:
            raise DataprepError(f"template field {{{name}}} has a format spec or conversion; use plain {{{name}}}")
    return parts


def get_template(spec: str | Template | None) -> Template | None:
    """A registered name, a template file (.txt: one format; .json/.yaml: with_input, without_input,
    completion_prefix), or an inline format string containing `{field}`s."""
    if spec is None or isinstance(spec, Template):
        return spec
    if spec in TEMPLATES:
        return TEMPLATES[spec]
    path = Path(spec)
    if "{" not in spec and path.suffix in (".txt", ".json", ".yaml", ".yml", ".tmpl") and path.is_file():
        return _template_file(path)
    if "{" in spec:
        # a shell gives `\n` as two characters; users mean a newline
        fmt = spec.replace("\\n", "\n").replace("\\t", "\t")
        _parse(fmt)
        return Template("custom", fmt, fmt)
    raise DataprepError(
        f"unknown template {spec!r}; use one of {', '.join(TEMPLATES)}, a format string with {{column}} fields, or a template file"
    )


def _template_file(path: Path) -> Template:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".txt" or path.suffix == ".tmpl":
        _parse(text)
        return Template(path.stem, text, text)
    import yaml

    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(data, dict) or "with_input" not in data:
        raise DataprepError(f"template file {path} needs keys with_input and (optionally) without_input, completion_prefix")
    unknown = set(data) - {"with_input", "without_input", "completion_prefix"}
    if unknown:
        raise DataprepError(f"template file {path} has unknown key {sorted(unknown)[0]}; allowed: with_input, without_input, completion_prefix")
    t = Template(path.stem, data["with_input"], data.get("without_input", data["with_input"]),
                 data.get("completion_prefix", ""))
    _parse(t.with_input), _parse(t.without_input)
    return t


def render_prompt(record: dict, template: str | Template) -> str:
    """The prompt for one record (a dict of field → value); `input` empty or missing picks the no-input form."""
    t = get_template(template)
    fmt = t.with_input if (record.get("input") or "") != "" else t.without_input
    values = {name: ("" if record.get(name) is None else str(record[name])) for name in format_fields(fmt)}
    return fmt.format(**values)


def prompt_expr(template: Template, has_input):
    """A polars expression that renders the prompt of every row; `has_input` is a boolean expression.
    Fields must be String columns of the frame (nulls render as empty)."""
    import polars as pl

    def render(fmt: str) -> pl.Expr:
        parts = []
        for literal, name, _, _ in _parse(fmt):
            if literal:
                parts.append(pl.lit(literal))
            if name is not None:
                parts.append(pl.col(name).fill_null(""))
        return pl.concat_str(parts) if parts else pl.lit("")

    if template.with_input == template.without_input:
        return render(template.with_input)
    return pl.when(has_input).then(render(template.with_input)).otherwise(render(template.without_input))


def generation_template(kind: str | None, template: dict | None) -> str | None:
    """How to render a bare prompt at generation time like the training rows were: "chat" for chat
    records, else the no-input format of convert's template (a lineage's `template`, as
    `Template.as_config()` writes it) with `{prompt}` for the instruction; None if unknown."""
    if kind == "chat":
        return "chat"
    text = template.get("without_input") if isinstance(template, dict) else None
    if kind != "sft" or not isinstance(text, str) or "{instruction}" not in text:
        return None
    return text.replace("{instruction}", "{prompt}")
