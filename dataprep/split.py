"""The split stage: records into train/val/test, seeded, group-aware and stratified.

Rows are first joined into **groups** that must not be split apart (union-find over): rows whose
kind text is equal after dedupe's normalisation (NFKC, case-folded, whitespace collapsed); rows
equal on every `--group-by` column; and, when the input is a `dataprep dedupe` output, the rows
its pairs.parquet links (directly or through a removed row). Groups are then assigned whole:

- **stratified** (classify records by their `labels`, or any `--stratify COLUMN`): iterative
  stratification (Sechidis, Tsoumakas & Vlahavas 2011) over groups: the label with the fewest
  unassigned groups goes first; each of its groups goes to the split that still wants the most
  of that label (ties: the split that wants the most rows). Multi-label rows count for each
  of their labels, so rare labels and label combinations are spread, not just the common ones.
- otherwise each group, in a seeded random order, goes to the split that still wants the most rows.

Layout: OUT/train, OUT/val, OUT/test each hold records.parquet and a manifest.json (with the
input's lineage), so any stage reads OUT/train like any other records directory; OUT/manifest.json
counts `in = train + val + test`. A fraction of 0 writes no directory for that split.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from dataprep.errors import DataprepError
from dataprep.io import MANIFEST, fingerprint, write_json
from dataprep.options import opt, parse_options
from dataprep.stage import (
    Counts,
    Manifest,
    Outcome,
    OutputOptions,
    Workspace,
    describe_inputs,
    run_stage,
    scan_records,
    stage_fingerprint,
    upstream_lineage,
)

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class SplitOptions(OutputOptions):
    """The split stage's options (dataprep.options): CLI flags, recipe keys and `split(**options)`."""

    val: float = opt(0.05, "Share of rows for validation (0 = no val split).", min=0, max=1)
    test: float = opt(0.05, "Share of rows for test (0 = no test split).", min=0, max=1)
    seed: int = opt(0, "Seed of the assignment: the same seed, input and options give the same splits.")
    stratify: str | None = opt(None, "Column to stratify by: a list column (multi-label) or a value column; "
                               "`meta.NAME` for a kept user column. Default: labels for classify records, "
                               "none otherwise; `none` turns it off.")
    group_by: tuple[str, ...] | None = opt(None, "Comma list of columns whose equal values keep rows in one split "
                                           "(e.g. meta.id), besides equal normalised text and dedupe groups.",
                                           metavar="COLUMNS")


def split(path: str | Path, out: str | Path, *, force: bool = False, **options: Any) -> Manifest:
    """Split the records at `path` into OUT/train, OUT/val and OUT/test; returns the manifest.

    `options` are the fields of SplitOptions. The manifest's `splits` counts rows per split
    (`in = train + val + test`), `groups` says how rows were held together, and `label_shares`
    (stratified) gives each label's share of rows per split.
    """
    o = parse_options(SplitOptions, options, "split")
    if o.val + o.test >= 1:
        raise DataprepError(f"split: --val {o.val} + --test {o.test} = {o.val + o.test:g} leaves no rows for train; "
                            "make their sum less than 1")
    data, manifest_in, kind, columns = scan_records(path, "split")
    stratify = o.stratify if o.stratify is not None else ("labels" if kind == "classify" else "none")
    if stratify != "none":
        _check_column("--stratify", stratify, columns)
    for col in o.group_by or ():
        _check_column("--group-by", col, columns)
    fractions = {"train": round(1 - o.val - o.test, 10), "val": o.val, "test": o.test}  # 0.9, not 0.8999...
    config = {**dataclasses.asdict(o), "stratify": stratify, "group_by": list(o.group_by or ())}
    config.pop("allow_empty")
    described = describe_inputs([str(data)])
    parent_fp = stage_fingerprint("split", described, config)

    def build(ws: Workspace) -> Outcome:
        from dataprep.io import read_records
        from dataprep.records import KIND_TABLE

        with ws.timer("read"):
            frame = read_records(data)
        with ws.timer("group"):
            text_fields = KIND_TABLE[kind].text if kind in KIND_TABLE else ()
            groups, group_stats = row_groups(frame, text_fields, o.group_by or (), dedupe_links(data, manifest_in))
        with ws.timer("assign"):
            labels = column_values(frame, stratify) if stratify != "none" else None
            assigned = assign_splits(groups, fractions, o.seed, labels)
        counts = {s: int((assigned == i).sum()) for i, s in enumerate(SPLITS)}
        for s in SPLITS:
            if fractions[s] > 0 and counts[s] == 0 and not o.allow_empty:
                raise DataprepError(f"split: {s} gets no row of {frame.height} ({len(np.unique(groups))} groups); "
                                    f"raise --{s}, give more rows, or pass --allow-empty")
        lineage = upstream_lineage(manifest_in).extend(kind=kind)  # each part's readers add the part itself
        with ws.timer("write"):
            for i, s in enumerate(SPLITS):
                if fractions[s] > 0:
                    _write_part(ws.out / s, frame.filter(assigned == i), s, parent_fp, described, config, lineage)
        details: dict[str, Any] = {"splits": counts, "groups": group_stats, "stratify": stratify}
        if labels is not None:
            details["label_shares"] = label_shares(labels, assigned, fractions)
        if sum(counts.values()) != frame.height:
            raise AssertionError(f"split: row accounting broken: in {frame.height} != {counts}")
        return Outcome(frame.height, frame.height, details, removed={}, lineage={"kind": kind})

    files = tuple(f"{s}/records.parquet" for s in SPLITS if fractions[s] > 0)
    return run_stage("split", out, inputs=[str(data)], config=config, build=build, data_files=files, force=force,
                     upstream=manifest_in, allow_empty=o.allow_empty)


split.config_class = SplitOptions  # recipe schema for **options (dataprep.recipe)
split.chained_output = "train"  # a recipe's next stage reads OUT/train (dataprep.pipeline)


def _write_part(directory: Path, frame, part: str, parent_fp: str, inputs: list, config: dict, lineage) -> None:
    """One split's records and a manifest of its own, so OUT/<part> reads like any records directory."""
    directory.mkdir()
    frame.write_parquet(directory / "records.parquet")
    size = (directory / "records.parquet").stat().st_size
    manifest = Manifest("split", fingerprint({"split": parent_fp, "part": part}), inputs,
                        {**config, "part": part}, Counts(frame.height, frame.height), lineage=lineage,
                        files={"records.parquet": size}, details={"part": part})
    write_json(directory / MANIFEST, manifest.to_json())


def _check_column(flag: str, column: str, columns: list[str]) -> None:
    name = column.split(".", 1)[0] if column.startswith("meta.") else column
    if name not in columns:
        raise DataprepError(f"{flag} {column}: no column {name!r} in the records; columns are: {', '.join(columns)}")


def column_values(frame, column: str) -> list:
    """The values of a column, or of a field of the `meta` struct (`meta.NAME`)."""
    import polars as pl

    if column.startswith("meta.") and column not in frame.columns:
        field = column.split(".", 1)[1]
        meta = frame.get_column("meta")
        if not isinstance(meta.dtype, pl.Struct) or field not in [f.name for f in meta.dtype.fields]:
            raise DataprepError(f"{column}: the meta column has no field {field!r}; keep it with convert "
                                f"--keep-columns {field}")
        return meta.struct.field(field).to_list()
    return frame.get_column(column).to_list()


# ---------------------------------------------------------------- groups


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return int(root)

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self.parent[max(ra, rb)] = min(ra, rb)
        return True

    def labels(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


def _link_equal(uf: UnionFind, keys) -> int:
    """Join rows with equal keys (None never joins); returns how many joins were new."""
    first: dict = {}
    joined = 0
    for i, key in enumerate(keys):
        if key is None:
            continue
        joined += uf.union(first.setdefault(key, i), i)
    return joined


def row_groups(frame, text_fields, group_by, links) -> tuple[np.ndarray, dict[str, Any]]:
    """(group id per row, stats): rows joined by equal normalised text, equal `group_by` values and
    the dedupe links (pairs of row positions)."""
    from dataprep.dedupe.exact import normalize_text
    from dataprep.dedupe.stage import record_texts

    uf = UnionFind(frame.height)
    joined = {}
    if text_fields:
        joined["same_text"] = _link_equal(uf, [normalize_text(t) for t in record_texts(frame, tuple(text_fields))])
    for col in group_by:
        values = column_values(frame, col)
        joined[f"group_by {col}"] = _link_equal(uf, [_hashable(v) for v in values])
    if links is not None:
        joined["dedupe_pairs"] = sum(uf.union(int(a), int(b)) for a, b in links)
    groups = uf.labels()
    sizes = np.bincount(groups)[np.unique(groups)] if len(groups) else np.empty(0, np.int64)
    return groups, {"groups": int(len(sizes)), "rows_in_shared_groups": int(sizes[sizes > 1].sum()),
                    "largest": int(sizes.max()) if len(sizes) else 0, "joined_by": joined}


def _hashable(value):
    """A column value as a dict key: lists as tuples, structs as their sorted items."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def dedupe_links(data: Path, manifest_in: Manifest | None) -> np.ndarray | None:
    """Pairs of output row positions that a dedupe output's pairs.parquet links, through removed rows
    too (A~B~C with B removed keeps A and C together); None when the input is not a dedupe output.
    The dedupe input's row i is output row k when i is the k-th id not in removed.parquet."""
    import polars as pl

    folder = data.parent
    if manifest_in is None or manifest_in.stage != "dedupe" or not (folder / "pairs.parquet").is_file():
        return None
    removed = pl.read_parquet(folder / "removed.parquet")
    id_col = "dedupe_id" if "dedupe_id" in removed.columns else "id"
    n_in = manifest_in.counts.n_in
    kept = np.setdiff1d(np.arange(n_in), removed.get_column(id_col).to_numpy())
    pairs = pl.read_parquet(folder / "pairs.parquet", columns=["id_a", "id_b"])
    a, b = pairs.get_column("id_a").to_numpy(), pairs.get_column("id_b").to_numpy()
    inside = (a < n_in) & (b < n_in) & (a >= 0) & (b >= 0)
    uf = UnionFind(n_in)
    for i, j in zip(a[inside], b[inside], strict=True):
        uf.union(int(i), int(j))
    roots = np.array([uf.find(int(i)) for i in kept], dtype=np.int64)
    first: dict[int, int] = {}
    links = []
    for k, r in enumerate(roots.tolist()):
        if (f := first.setdefault(r, k)) != k:
            links.append((f, k))
    return np.array(links, dtype=np.int64).reshape(-1, 2)


# ---------------------------------------------------------------- assignment


def _label_index(labels: list) -> tuple[list[np.ndarray], list]:
    """Per row, the indices of its labels (a list value: each item; a scalar: itself; None: none)."""
    names: dict = {}
    rows = []
    for v in labels:
        items = v if isinstance(v, (list, tuple)) else ([] if v is None else [v])
        rows.append(np.array(sorted({names.setdefault(_hashable(x), len(names)) for x in items}), dtype=np.int64))
    return rows, list(names)


def assign_splits(groups: np.ndarray, fractions: dict[str, float], seed: int, labels: list | None = None) -> np.ndarray:
    """Split index (0 train, 1 val, 2 test) per row; every group's rows get one split."""
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(groups, return_inverse=True)
    order = rng.permutation(len(uniq))  # the seeded order groups are taken in
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    sizes = np.bincount(inverse, minlength=len(uniq)).astype(float)
    frac = np.array([fractions[s] for s in SPLITS])
    want_rows = frac * len(groups)
    unit_split = np.full(len(uniq), -1)
    if labels is not None:
        per_row, names = _label_index(labels)
        unit_labels: list[dict[int, int]] = [{} for _ in uniq]
        for r, idx in enumerate(per_row):
            d = unit_labels[inverse[r]]
            for j in idx.tolist():
                d[j] = d.get(j, 0) + 1
        totals = np.zeros(len(names))
        for d in unit_labels:
            for j, c in d.items():
                totals[j] += c
        want = frac[:, None] * totals[None, :]
        units_of = [[] for _ in names]
        for u in np.argsort(rank).tolist():  # each label's groups in the seeded order
            for j in unit_labels[u]:
                units_of[j].append(u)
        left = np.array([len(x) for x in units_of], dtype=np.int64)
        while (left > 0).any():
            label = int(np.argmin(np.where(left > 0, left, np.iinfo(np.int64).max)))
            for u in units_of[label]:
                if unit_split[u] >= 0:
                    continue
                s = _best(want[:, label], want_rows, frac)
                unit_split[u] = s
                want_rows[s] -= sizes[u]
                for j, c in unit_labels[u].items():
                    want[s, j] -= c
                    left[j] -= 1
    for u in np.argsort(rank).tolist():  # groups without labels (or no stratification)
        if unit_split[u] < 0:
            s = _best(want_rows, want_rows, frac)
            unit_split[u] = s
            want_rows[s] -= sizes[u]
    return unit_split[inverse]


def _best(first: np.ndarray, second: np.ndarray, frac: np.ndarray) -> int:
    """The split that wants the most of `first`, ties broken by `second`, then train before val
    before test; a split of share 0 never."""
    candidates = [s for s in range(len(frac)) if frac[s] > 0]
    return max(candidates, key=lambda s: (first[s], second[s], -s))


def label_shares(labels: list, assigned: np.ndarray, fractions: dict[str, float]) -> dict[str, Any]:
    """For each label, its rows and the share of them each split got (stratification aims at the
    split's fraction), and the largest gap between such a share and its fraction."""
    per_row, names = _label_index(labels)
    row_of = np.repeat(np.arange(len(per_row)), [len(x) for x in per_row])
    label_of = np.concatenate(per_row) if per_row else np.empty(0, np.int64)
    totals = np.bincount(label_of, minlength=len(names))
    parts = {s: np.bincount(label_of[assigned[row_of] == i], minlength=len(names)) for i, s in enumerate(SPLITS)}
    worst = 0.0
    shares = {}
    for j, name in enumerate(names):
        shares[str(name)] = {"rows": int(totals[j]), **{s: round(float(parts[s][j] / totals[j]), 4) for s in SPLITS
                                                        if fractions[s] > 0}}
        worst = max([worst] + [abs(parts[s][j] / totals[j] - fractions[s]) for s in SPLITS if fractions[s] > 0])
    return {"max_gap": round(float(worst), 4), "labels": shares}
