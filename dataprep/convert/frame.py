"""`convert_frame`: the pure per-batch conversion, a polars frame with `source`/`row` columns in,
(records, rejects) out, no global state, so an engine can map it over partitions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dataprep.convert.columns import PROVENANCE, resolve_columns
from dataprep.convert.flat import cast_records, checked_text, choose_answers
from dataprep.convert.nested import INVALID_UNICODE_REASON
from dataprep.convert.rowfn import apply_row_fn
from dataprep.errors import DataprepError
from dataprep.records import get_kind, load_function
from dataprep.sources.json import INVALID_UNICODE
from dataprep.templates import TEMPLATES, Template, get_template


def convert_frame(frame, kind: str, *, template: str | Template | None = None, mapping: dict[str, str] | None = None,
                  row_fn: Callable[[dict], dict] | None = None, label_names: list[str] | None = None,
                  label_sep: str = ",", choices: tuple[str, ...] | None = None, choice_label: str = "label",
                  keep_columns: tuple[str, ...] | None = None, think: str = "keep"):
    """Convert one frame (with `source`/`row` columns) into canonical records of `kind`.

    Returns (records, rejects): a polars frame with the columns of records.SCHEMAS[kind] and
    a list of {source, row, reason, detail}. Every input row is in exactly one of them.
    Raises DataprepError for problems that concern the whole input (a missing column, an
    unknown template field). `choices` (sft): answer columns; the row's `choice_label` column (a
    0-based index) picks the one that becomes `output`. `keep_columns` (or `("all",)`: every column
    no field uses) are carried in a `meta` struct column, matched to each record by source and row.
    """
    import polars as pl

    entry = get_kind(kind)
    tmpl = template_for(kind, template)
    check_choices(kind, choices, row_fn, choice_label)
    frame, rejects = _invalid_unicode_rows(frame)
    kept = kept_columns(frame.columns, keep_columns, kind, template=template, mapping=mapping, row_fn=row_fn,
                        choices=choices, choice_label=choice_label) if keep_columns else {}
    original = frame
    if row_fn is not None:
        frame, more = apply_row_fn(frame, row_fn, kind)
        rejects += more
    if tmpl is not None:
        _check_template_fields(tmpl, frame.columns)
    if choices:
        mapping = choice_mapping(frame.columns, mapping, choices, choice_label)
    cols = resolve_columns(frame.columns, kind, mapping, tmpl)
    work = frame.select([pl.col(src).alias(field) for field, src in cols.items()] + [pl.col(c) for c in PROVENANCE])
    if choices:
        work, more = choose_answers(work, frame, tuple(choices), choice_label)
        rejects += more
    if entry.convert is None:  # a kind of text fields only
        records, more = checked_text(work, entry.fields, entry.optional)
    else:
        ctx = ConvertContext(kind, tmpl, label_names, label_sep, think)
        records, more = load_function(entry.convert)(work, frame, ctx)
    records = cast_records(records, kind)
    if kept:
        values = [_storable(original.get_column(c)).alias(f) for f, c in kept.items()]
        meta = original.select(*PROVENANCE).with_columns(pl.struct(values).alias("meta"))
        records = records.join(meta, on=list(PROVENANCE), how="left", maintain_order="left")
    return records, rejects + more


def _check_template_fields(tmpl: Template, columns: list[str]) -> None:
    missing = sorted(tmpl.fields() - {"instruction", "input", "output"} - set(columns))
    if missing:
        listed = ", ".join(c for c in columns if c not in PROVENANCE)
        raise DataprepError(f"template field {{{missing[0]}}} is not a column; columns are: {listed}; "
                            "use {instruction}, {input}, {output} or a column name")


def check_choices(kind: str, choices: tuple[str, ...] | None, row_fn: object, choice_label: str = "label") -> None:
    """--choice is for sft data without a row-fn; --choice-label only with it."""
    if not choices:
        if choice_label != "label":
            raise DataprepError("--choice-label applies with --choice only; drop it")
        return
    if kind != "sft":
        raise DataprepError(f"--choice applies to --kind sft only, not {kind}; drop --choice")
    if row_fn is not None:
        raise DataprepError("--choice and --row-fn do not combine; pick the answer in the row-fn, or drop it")


def choice_mapping(columns: list[str], mapping: dict[str, str] | None, choices: tuple[str, ...],
                   label: str) -> dict[str, str]:
    """`mapping` with `output` from the first answer column (`choose_answers` then picks each row's),
    after checking that the answer and label columns exist."""
    listed = ", ".join(c for c in columns if c not in PROVENANCE)
    for flag, column in [("--choice", c) for c in choices] + [("--choice-label", label)]:
        if column not in columns:
            raise DataprepError(f"{flag} {column}: no column {column!r}; columns are: {listed}")
    if mapping and "output" in mapping:
        raise DataprepError(f"--choice picks the output; drop --map output={mapping['output']}")
    return {**(mapping or {}), "output": choices[0]}


def ignored_columns(columns: list[str], kind: str, *, template: str | Template | None = None,
                    mapping: dict[str, str] | None = None, row_fn: Callable | None = None,
                    choices: tuple[str, ...] | None = None, choice_label: str = "label",
                    keep_columns: tuple[str, ...] | None = None, **_: object) -> list[str]:
    """The source columns `convert_frame` does not use, so the stage can say so (a row-fn sees them all;
    every answer column of --choice is used to pick, and so is its label column; kept columns are used)."""
    if row_fn is not None:
        return []
    unused = _unused_columns(columns, kind, template, mapping, choices, choice_label)
    kept = set(kept_columns(columns, keep_columns, kind, template=template, mapping=mapping, choices=choices,
                            choice_label=choice_label).values()) if keep_columns else set()
    return [c for c in unused if c not in kept]


def kept_columns(columns: list[str], keep: tuple[str, ...], kind: str, *, row_fn: Callable | None = None,
                 **options) -> dict[str, str]:
    """--keep-columns as meta field -> source column. `all`: every column no field uses (with a row-fn:
    every column). A user's own `source`/`row` (read as input_source/input_row) keep their names."""
    if tuple(keep) == ("all",):
        chosen = [c for c in columns if c not in PROVENANCE and c != INVALID_UNICODE] if row_fn is not None else \
            _unused_columns(columns, kind, **options)
    else:
        chosen = []
        for name in keep:
            column = f"input_{name}" if name in PROVENANCE else name
            if column not in columns:
                listed = ", ".join(c for c in columns if c not in PROVENANCE)
                raise DataprepError(f"--keep-columns {name}: no column {name!r}; columns are: {listed}")
            chosen.append(column)
    return {c.removeprefix("input_") if c in ("input_source", "input_row") else c: c for c in chosen}


def _unused_columns(columns: list[str], kind: str, template: str | Template | None = None,
                    mapping: dict[str, str] | None = None, choices: tuple[str, ...] | None = None,
                    choice_label: str = "label") -> list[str]:
    tmpl = template_for(kind, template)
    if choices:
        mapping = choice_mapping(columns, mapping, choices, choice_label)
    used = set(resolve_columns(columns, kind, mapping, tmpl).values()) | (tmpl.fields() if tmpl else set())
    used |= set(choices or ()) | ({choice_label} if choices else set())
    return [c for c in columns if c not in used and c not in PROVENANCE and c != INVALID_UNICODE]


def _invalid_unicode_rows(frame):
    """(frame without the rows a reader marked as holding lone surrogates, their rejects)."""
    import polars as pl

    if INVALID_UNICODE not in frame.columns:
        return frame, []
    bad = frame.filter(pl.col(INVALID_UNICODE))
    rejects = [{"source": s, "row": r, "reason": INVALID_UNICODE_REASON, "detail": None}
               for s, r in bad.select("source", "row").iter_rows()]
    return frame.filter(~pl.col(INVALID_UNICODE)).drop(INVALID_UNICODE), rejects


@dataclass(frozen=True)
class ConvertContext:
    """What a kind's converter may need besides the rows: kind-specific convert options."""

    kind: str
    template: Template | None = None
    label_names: list[str] | None = None
    label_sep: str = ","
    think: str = "keep"  # chat: inline <think>...</think> kept as text or split into reasoning_content


def template_for(kind: str, template: str | Template | None) -> Template | None:
    if kind != "sft":
        if template is not None:
            raise DataprepError(f"--template applies to --kind sft only, not {kind}; drop --template")
        return None
    return get_template(template) or TEMPLATES["alpaca"]


def conform_meta(records, meta_type):
    """`records` with its `meta` column in `meta_type` (the first batch's): missing fields as nulls; a new
    field or a type that does not cast is a one-line error."""
    import polars as pl

    have = {f.name: f.dtype for f in records.schema["meta"].fields}
    want = {f.name: f.dtype for f in meta_type.fields}
    new = [name for name in have if name not in want]
    if new:
        raise DataprepError(f"--keep-columns: column {new[0]!r} appears in a later source but not in the first; "
                            "name the columns to keep (--keep-columns a,b) instead of all")
    fields = [pl.col("meta").struct.field(n).alias(n) if n in have else pl.lit(None).alias(n) for n in want]
    try:
        return records.with_columns(pl.struct(fields).cast(meta_type, strict=True).alias("meta"))
    except pl.exceptions.PolarsError:
        changed = next(n for n in want if n in have and have[n] != want[n])
        raise DataprepError(f"--keep-columns: column {changed!r} is {have[changed]} in a later source but "
                            f"{want[changed]} in the first; make the sources agree") from None


def _storable(column):
    """A column as parquet can store it: JSON values read as Python objects (dataprep.sources.json) get
    their inferred type, or, when they mix types, JSON text."""
    import json

    import polars as pl

    if column.dtype != pl.Object:
        return column
    values = column.to_list()
    try:
        return pl.Series(column.name, values, strict=True)
    except (TypeError, ValueError, pl.exceptions.PolarsError):
        return pl.Series(column.name, [None if v is None else json.dumps(v, ensure_ascii=False) for v in values],
                         dtype=pl.String)
