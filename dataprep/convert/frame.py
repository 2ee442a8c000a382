"""`convert_frame`: the pure per-batch conversion, a polars frame with `source`/`row` columns in,
(records, rejects) out, no global state, so an engine can map it over partitions.
"""

from __future__ import annotations

from collections.abc import Callable

from dataprep.convert.columns import PROVENANCE, resolve_columns
from dataprep.convert.flat import cast_records, checked_text, classify_records, sft_records
from dataprep.convert.nested import chat_record, per_row, preference_record
from dataprep.convert.rowfn import apply_row_fn
from dataprep.errors import DataprepError
from dataprep.records import KINDS
from dataprep.templates import TEMPLATES, Template, get_template


def convert_frame(frame, kind: str, *, template: str | Template | None = None, mapping: dict[str, str] | None = None,
                  row_fn: Callable[[dict], dict] | None = None, label_names: list[str] | None = None,
                  label_sep: str = ","):
    """Convert one frame (with `source`/`row` columns) into canonical records of `kind`.

    Returns (records, rejects): a polars frame with the columns of records.SCHEMAS[kind] and
    a list of {source, row, reason, detail}. Every input row is in exactly one of them.
    Raises DataprepError for problems that concern the whole input (a missing column, an
    unknown template field).
    """
    import polars as pl

    if kind not in KINDS:
        raise DataprepError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    tmpl = template_for(kind, template)
    rejects: list[dict] = []
    if row_fn is not None:
        frame, rejects = apply_row_fn(frame, row_fn, kind)
    if tmpl is not None:
        _check_template_fields(tmpl, frame.columns)
    cols = resolve_columns(frame.columns, kind, mapping, tmpl)
    work = frame.select([pl.col(src).alias(field) for field, src in cols.items()] + [pl.col(c) for c in PROVENANCE])
    if kind == "sft":
        records, more = sft_records(work, frame, tmpl)
    elif kind == "text":
        records, more = checked_text(work, ("text",))
    elif kind == "classify":
        records, more = classify_records(work, label_names, label_sep)
    elif kind == "chat":
        records, more = per_row(work, chat_record, kind)
    else:
        records, more = per_row(work, preference_record, kind)
    return cast_records(records, kind), rejects + more


def _check_template_fields(tmpl: Template, columns: list[str]) -> None:
    missing = sorted(tmpl.fields() - {"instruction", "input", "output"} - set(columns))
    if missing:
        listed = ", ".join(c for c in columns if c not in PROVENANCE)
        raise DataprepError(f"template field {{{missing[0]}}} is not a column; columns are: {listed}; "
                            "use {instruction}, {input}, {output} or a column name")


def template_for(kind: str, template: str | Template | None) -> Template | None:
    if kind != "sft":
        if template is not None:
            raise DataprepError(f"--template applies to --kind sft only, not {kind}; drop --template")
        return None
    return get_template(template) or TEMPLATES["alpaca"]
