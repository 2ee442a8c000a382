"""`convert_frame`: the pure per-batch conversion, a polars frame with `source`/`row` columns in,
(records, rejects) out, no global state, so an engine can map it over partitions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dataprep.convert.columns import PROVENANCE, resolve_columns
from dataprep.convert.flat import cast_records, checked_text
from dataprep.convert.nested import INVALID_UNICODE_REASON
from dataprep.convert.rowfn import apply_row_fn
from dataprep.errors import DataprepError
from dataprep.records import get_kind, load_function
from dataprep.sources.json import INVALID_UNICODE
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

    entry = get_kind(kind)
    tmpl = template_for(kind, template)
    frame, rejects = _invalid_unicode_rows(frame)
    if row_fn is not None:
        frame, more = apply_row_fn(frame, row_fn, kind)
        rejects += more
    if tmpl is not None:
        _check_template_fields(tmpl, frame.columns)
    cols = resolve_columns(frame.columns, kind, mapping, tmpl)
    work = frame.select([pl.col(src).alias(field) for field, src in cols.items()] + [pl.col(c) for c in PROVENANCE])
    if entry.convert is None:  # a kind of text fields only
        records, more = checked_text(work, entry.fields, entry.optional)
    else:
        ctx = ConvertContext(kind, tmpl, label_names, label_sep)
        records, more = load_function(entry.convert)(work, frame, ctx)
    return cast_records(records, kind), rejects + more


def _check_template_fields(tmpl: Template, columns: list[str]) -> None:
    missing = sorted(tmpl.fields() - {"instruction", "input", "output"} - set(columns))
    if missing:
        listed = ", ".join(c for c in columns if c not in PROVENANCE)
        raise DataprepError(f"template field {{{missing[0]}}} is not a column; columns are: {listed}; "
                            "use {instruction}, {input}, {output} or a column name")


def ignored_columns(columns: list[str], kind: str, *, template: str | Template | None = None,
                    mapping: dict[str, str] | None = None, row_fn: Callable | None = None, **_: object) -> list[str]:
    """The source columns `convert_frame` does not use, so the stage can say so (a row-fn sees them all)."""
    if row_fn is not None:
        return []
    tmpl = template_for(kind, template)
    used = set(resolve_columns(columns, kind, mapping, tmpl).values()) | (tmpl.fields() if tmpl else set())
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


def template_for(kind: str, template: str | Template | None) -> Template | None:
    if kind != "sft":
        if template is not None:
            raise DataprepError(f"--template applies to --kind sft only, not {kind}; drop --template")
        return None
    return get_template(template) or TEMPLATES["alpaca"]
