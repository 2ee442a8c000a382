"""Flat kinds (sft, text, classify): vectorised polars checks and templates over whole columns.

Each function takes the mapped frame and returns (records, reject dicts); a null, blank or
non-string field is a reject with its reason.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dataprep.convert.columns import PROVENANCE
from dataprep.errors import DataprepError
from dataprep.records import get_kind
from dataprep.templates import prompt_expr


def polars_schema(kind: str) -> dict:
    """records.get_kind(kind).schema as polars dtypes (pl.from_arrow would import pandas, ~1.5 s)."""
    import polars as pl
    import pyarrow as pa

    def dtype(t: pa.DataType):
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return pl.List(dtype(t.value_type))
        if pa.types.is_struct(t):
            return pl.Struct({t.field(i).name: dtype(t.field(i).type) for i in range(t.num_fields)})
        return {pa.string(): pl.String, pa.int64(): pl.Int64, pa.int32(): pl.Int32, pa.float32(): pl.Float32,
                pa.bool_(): pl.Boolean}[t]

    return {f.name: dtype(f.type) for f in get_kind(kind).schema}


def cast_records(records, kind: str):
    """Select and type the canonical columns exactly as records.SCHEMAS says."""
    schema = polars_schema(kind)
    return records.select(list(schema)).cast(schema)


def no_reason():
    import polars as pl

    return pl.lit(None, dtype=pl.String)


def text_column(frame, field: str):
    """(frame with `field` as String, reason expression): null → missing, blank → empty, non-string → non-string."""
    import polars as pl

    col = frame[field]
    if col.dtype == pl.String:
        reason = pl.when(pl.col(field).is_null()).then(pl.lit(f"missing {field}")).when(
            ~pl.col(field).str.contains(r"\S")).then(pl.lit(f"empty {field}")).otherwise(no_reason())
        return frame, reason
    values = col.to_list()
    bad = [v is not None and not isinstance(v, str) for v in values]
    frame = frame.with_columns(
        pl.Series(field, [v if isinstance(v, str) else None for v in values], dtype=pl.String),
        pl.Series(f"_bad_{field}", bad, dtype=pl.Boolean),
    )
    reason = pl.when(pl.col(f"_bad_{field}")).then(pl.lit(f"non-string {field}")).when(
        pl.col(field).is_null()).then(pl.lit(f"missing {field}")).when(
        ~pl.col(field).str.contains(r"\S")).then(pl.lit(f"empty {field}")).otherwise(no_reason())
    return frame, reason


def checked_text(frame, required: tuple[str, ...], optional: tuple[str, ...] = ()):
    """Split `frame` into rows whose text fields are valid and reject dicts; optional fields may be null."""
    import polars as pl

    reasons = []
    for field in required + optional:
        if field not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(field))
        frame, reason = text_column(frame, field)
        if field in optional:  # a missing or blank optional field is fine; a wrong type is not
            reason = pl.when(pl.col(field).is_null() | (~pl.col(field).str.contains(r"\S"))).then(
                no_reason()).otherwise(reason)
        reasons.append(reason)
    frame = frame.with_columns(pl.coalesce(reasons).alias("_reason"))
    return split_rejects(frame)


def split_rejects(frame):
    """(rows whose `_reason` is null, without helper columns; reject dicts for the others)."""
    import polars as pl

    helpers = [c for c in frame.columns if c.startswith("_")]
    if frame["_reason"].null_count() == frame.height:  # nothing rejected: skip copying every string
        return frame.drop(helpers), []
    bad = frame.filter(pl.col("_reason").is_not_null())
    detail = pl.col("_detail") if "_detail" in frame.columns else pl.lit(None, dtype=pl.String)
    rejects = [{"source": s, "row": r, "reason": why, "detail": d}
               for s, r, why, d in bad.select("source", "row", "_reason", detail).iter_rows()]
    return frame.filter(pl.col("_reason").is_null()).drop(helpers), rejects


def sft_records(work, frame, ctx):
    """instruction/input/output → prompt (template, vectorised) and completion (prefix + output)."""
    import polars as pl

    tmpl = ctx.template

    required = ("instruction", "output") if "instruction" in tmpl.fields() else ("output",)
    good, rejects = checked_text(work, required, tuple(f for f in ("instruction", "input") if f not in required))
    extra = sorted(tmpl.fields() - {"instruction", "input", "output"})
    if extra:  # raw source columns used by a custom template, matched back by provenance
        raw = frame.select([pl.col(c).cast(pl.String) for c in extra] + [pl.col(c) for c in PROVENANCE])
        good = good.join(raw, on=list(PROVENANCE), how="left", maintain_order="left")
    good = good.with_columns(pl.col("input").fill_null(""))
    records = good.with_columns(
        prompt_expr(tmpl, pl.col("input") != "").alias("prompt"),
        (pl.lit(tmpl.completion_prefix) + pl.col("output")).alias("completion")
        if tmpl.completion_prefix else pl.col("output").alias("completion"),
    )
    return records, rejects


def choice_index(value: Any, n: int) -> tuple[int | None, str | None]:
    """(index, None) or (None, reject reason) for a multiple-choice label: a 0-based int or digit string below `n`."""
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None, "missing label"
        if not re.fullmatch(r"[+-]?\d+", value):
            return None, "non-integer label"
        value = int(value)
    if value is None:
        return None, "missing label"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return None, "non-integer label"
    return (value, None) if 0 <= value < n else (None, "label out of range")


def choose_answers(work, frame, choices: tuple[str, ...], label: str):
    """`work` (rows of `frame`, in order) with `output` the answer column the row's label picks; rows whose
    label is missing, not an integer or out of range, or whose chosen answer is empty, are rejects."""
    import polars as pl

    outputs, reasons, details = [], [], []
    for value, answers in zip(frame[label].to_list(), frame.select(choices).iter_rows(), strict=True):
        i, why = choice_index(value, len(choices))
        answer = answers[i] if why is None else None
        if why is None and not (isinstance(answer, str) and answer.strip()):
            why = "empty chosen answer"
        outputs.append(answer if why is None else None)
        reasons.append(why)
        # the raw label of a bad label, or the column the label picked
        details.append(None if why is None or value is None else repr(value)[:200] if i is None else choices[i])
    work = work.with_columns(
        pl.Series("output", outputs, dtype=pl.String),
        pl.Series("_reason", reasons, dtype=pl.String),
        pl.Series("_detail", details, dtype=pl.String),
    )
    return split_rejects(work)


def read_label_names(path: str) -> list[str]:
    """One label name a line (GoEmotions `emotions.txt`); line i is label id i."""
    p = Path(path)
    if not p.is_file():
        raise DataprepError(f"label names file {path} does not exist; pass a file with one label name a line")
    names = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise DataprepError(f"label names file {path} is empty; write one label name a line")
    return names


def parse_labels(value: Any, names: list[str] | None = None, sep: str = ",") -> tuple[list[str] | None, str | None]:
    """(label names, None) or (None, reject reason). Ids (ints or digit strings) index `names`."""
    if value is None:
        return None, "missing labels"
    if isinstance(value, str):
        tokens: list = [t.strip() for t in value.split(sep)]
    elif isinstance(value, (list, tuple)):
        tokens = [t.strip() if isinstance(t, str) else t for t in value]
    elif isinstance(value, int) and not isinstance(value, bool):
        tokens = [value]
    else:
        return None, "non-string labels"
    labels: list[str] = []
    for t in tokens:
        if t == "" or t is None:
            continue
        if isinstance(t, bool) or not isinstance(t, (str, int)):
            return None, "non-string labels"
        if names is not None:
            if isinstance(t, int) or t.isdigit():
                i = int(t)
                if not 0 <= i < len(names):
                    return None, "unknown label id"
                t = names[i]
            elif t not in names:
                return None, "unknown label"
        t = str(t)
        if t not in labels:
            labels.append(t)
    return (labels, None) if labels else (None, "empty labels")


def classify_records(work, frame, ctx):
    """text + labels; labels from a separated string, a list, or ids into `ctx.label_names`."""
    import polars as pl

    label_names, sep = ctx.label_names, ctx.label_sep

    good, rejects = checked_text(work, ("text",))
    values = good["labels"].to_list()
    parsed = [parse_labels(v, label_names, sep) for v in values]
    good = good.with_columns(
        pl.Series("labels", [p[0] for p in parsed], dtype=pl.List(pl.String)),
        pl.Series("_reason", [p[1] for p in parsed], dtype=pl.String),
        # the raw labels of a rejected row, so the reject says which id or name was wrong
        pl.Series("_detail", [None if p[1] is None or v is None else repr(v)[:200] for p, v in zip(parsed, values, strict=True)],
                  dtype=pl.String),
    )
    good, more = split_rejects(good)
    return good, rejects + more
