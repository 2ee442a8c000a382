"""The mix stage: records of one kind from several inputs, sampled to row counts or weights, seeded.

Each input is a records directory or file (the output of convert, dedupe, filter, split/train, ...).
`rows` takes that many rows from each input; `weights` (with an optional `total`) turns shares into
row counts by largest remainder; with neither, every row of every input is taken. Each input is
sampled without replacement by its own seeded generator, and its rows keep their input order, so
the same seed, inputs and options give the same mix. The manifest counts, for each input, the rows
it had and gave; `in = out + not sampled`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from dataprep.errors import DataprepError
from dataprep.options import opt, parse_options
from dataprep.stage import Manifest, Outcome, OutputOptions, Workspace, run_stage, scan_records, upstream_lineage


def _ints(values) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise ValueError(f"{','.join(values)}: give whole numbers, one per input, e.g. 500,300") from None


def _floats(values) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in values)
    except ValueError:
        raise ValueError(f"{','.join(values)}: give numbers, one per input, e.g. 0.7,0.3") from None


def _non_negative(values) -> str | None:
    return "every value must be ≥ 0" if any(v < 0 for v in values) else None


@dataclasses.dataclass(frozen=True)
class MixOptions(OutputOptions):
    """The mix stage's options (dataprep.options): CLI flags, recipe keys and `mix(**options)`."""

    rows: tuple[int, ...] | None = opt(None, "Rows to take from each input, in input order (comma list).",
                                       cli=_ints, check=_non_negative, metavar="N,N,...")
    weights: tuple[float, ...] | None = opt(None, "Share of each input in the mix, in input order (comma list; "
                                            "scaled to sum 1).", cli=_floats, check=_non_negative,
                                            metavar="W,W,...")
    total: int | None = opt(None, "With --weights: rows of the mix (default: the most the inputs give without "
                            "repeating a row).", min=1)
    seed: int = opt(0, "Seed of the sampling: the same seed, inputs and options give the same rows.")


def mix(inputs: str | list[str], out: str | Path, *, force: bool = False, **options: Any) -> Manifest:
    """Mix the records of `inputs` into the directory `out`; returns the manifest.

    `options` are the fields of MixOptions. Inputs of different kinds, counts or weights that do not
    match the inputs, or more rows asked of an input than it has, are one-line errors.
    """
    o = parse_options(MixOptions, options, "mix")
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not inputs:
        raise DataprepError("mix: no input given; pass one or more records directories")
    scanned = [scan_records(p, "mix") for p in inputs]
    kinds = [s[2] for s in scanned]
    for p, k in zip(inputs, kinds, strict=True):
        if k is None or k != kinds[0]:
            raise DataprepError(f"mix: {p} holds {k or 'unknown'} records but {inputs[0]} holds {kinds[0]}; mix "
                                "inputs of one kind")
    available = [_count(s[0]) for s in scanned]
    take = rows_to_take(inputs, available, o)
    config = {**dataclasses.asdict(o), "inputs": [str(p) for p in inputs]}
    config.pop("allow_empty")

    def build(ws: Workspace) -> Outcome:
        import polars as pl

        from dataprep.io import read_records

        frames, sources, not_sampled = [], [], {}
        with ws.timer("sample"):
            for i, (p, s, n) in enumerate(zip(inputs, scanned, take, strict=True)):
                frame = read_records(s[0])
                picked = np.sort(np.random.default_rng([o.seed, i]).choice(frame.height, n, replace=False))
                frames.append(frame[picked.tolist()] if n else frame.clear())
                sources.append({"input": str(p), "rows": frame.height, "taken": int(n)})
                if frame.height - n:
                    not_sampled[f"not sampled: {p}"] = frame.height - int(n)
        with ws.timer("write"):
            try:
                mixed = pl.concat(frames, how="diagonal_relaxed")
            except pl.exceptions.PolarsError as exc:
                raise DataprepError(f"mix: the inputs' columns do not combine ({str(exc).splitlines()[0][:120]}); "
                                    "mix outputs of the same stages") from None
            mixed.write_parquet(ws.out / "records.parquet")
        lineage, warnings = mixed_lineage([s[1] for s in scanned], kinds[0])
        details = {"sources": sources, "warnings": warnings}
        return Outcome(sum(available), mixed.height, details, removed=not_sampled, lineage=lineage)

    return run_stage("mix", out, inputs=[str(s[0]) for s in scanned], config=config, build=build,
                     data_files=("records.parquet",), force=force, allow_empty=o.allow_empty)


mix.config_class = MixOptions  # recipe schema for **options (dataprep.recipe)


def _count(data: Path) -> int:
    from dataprep.io import record_count

    return record_count(data)


def rows_to_take(inputs: list, available: list[int], o: MixOptions) -> list[int]:
    """Rows to sample from each input: `rows`, or `weights` scaled to `total` by largest remainder,
    or every row."""
    if o.rows is not None and o.weights is not None:
        raise DataprepError("mix: give --rows or --weights, not both")
    if o.total is not None and o.weights is None:
        raise DataprepError("mix: --total applies with --weights only; drop it or give --weights")
    given = o.rows if o.rows is not None else o.weights
    if given is not None and len(given) != len(inputs):
        flag = "--rows" if o.rows is not None else "--weights"
        raise DataprepError(f"mix: {flag} has {len(given)} values for {len(inputs)} inputs; give one per input")
    if o.rows is not None:
        take = list(o.rows)
    elif o.weights is not None:
        if sum(o.weights) <= 0:
            raise DataprepError("mix: --weights sum to 0; give at least one positive weight")
        share = np.array(o.weights, dtype=float) / sum(o.weights)
        total = o.total if o.total is not None else int(min(a / s for a, s in zip(available, share, strict=True) if s > 0))
        exact = share * total
        take = np.floor(exact).astype(int)
        for i in np.argsort(-(exact - take), kind="stable")[: total - int(take.sum())]:
            take[i] += 1
        take = take.tolist()
    else:
        take = list(available)
    for p, n, a in zip(inputs, take, available, strict=True):
        if n > a:
            raise DataprepError(f"mix: {p} has {a} rows but the mix asks {n} of it; lower --rows or --total "
                                "(rows are never repeated)")
    return take


def mixed_lineage(manifests: list[Manifest | None], kind: str) -> tuple[dict[str, Any], list[str]]:
    """The facts of the mix: the kind; the label names of every input (first seen first); the template
    when every input has the same; every input and its own upstream chain."""
    lineages = [upstream_lineage(m) for m in manifests]
    labels: list[str] = []
    for lin in lineages:
        labels += [n for n in lin.label_names or () if n not in labels]
    templates = {repr(lin.template) for lin in lineages}
    warnings = []
    template = lineages[0].template
    if len(templates) > 1:
        template = None
        warnings.append("the inputs were rendered with different prompt templates; the mix records none "
                        "(generate cannot render prompts as trained)")
    upstream: list[dict[str, str]] = []
    for lin in lineages:
        upstream += [u for u in lin.upstream if u not in upstream]
    lineage: dict[str, Any] = {"kind": kind, "template": template, "upstream": tuple(upstream)}
    if labels:
        lineage["label_names"] = labels
    return lineage, warnings
