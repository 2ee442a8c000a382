"""The convert stage: stream the sources in batches through `convert_frame`, append each batch
to the records file, then rejects and the manifest through the stage contract (dataprep.stage).
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from dataprep.convert.flat import read_label_names
from dataprep.convert.frame import check_choices, convert_frame, ignored_columns, template_for
from dataprep.convert.rowfn import load_row_fn, row_fn_fingerprint
from dataprep.engine import EngineOptions, ray_map, timed
from dataprep.errors import DataprepError
from dataprep.io import sha256_path
from dataprep.options import opt, parse_options
from dataprep.records import KINDS, get_kind
from dataprep.sources import iter_batches, source_name
from dataprep.stage import Manifest, Outcome, OutputOptions, Rejects, Timer, Workspace, run_stage

FORMATS = ("parquet", "jsonl")
READER = ("delimiter", "encoding", "has_header", "quote_char", "split")  # options of dataprep.sources.read_table


def parse_map(values: tuple[str, ...]) -> dict[str, str] | None:
    """`--map FIELD=COLUMN` (repeated) as a mapping."""
    mapping = {}
    for item in values:
        field, sep, column = item.partition("=")
        if not sep or not field or not column:
            raise ValueError(f"{item!r}: write FIELD=COLUMN, e.g. instruction=goal")
        mapping[field.strip()] = column.strip()
    return mapping or None


def _one_byte(flag: str) -> Callable[[str | None], str | None]:
    """A check that a CSV delimiter or quote character is one single-byte character (what polars takes)."""
    def check(value: str | None) -> str | None:
        if value is None or value == "auto" or len(str(value).encode("utf-8")) == 1:
            return None
        return f"{flag} must be one single-byte character, not {value!r}"
    return check


def _kind_problem(kind: str) -> str | None:
    """Asked at each check, so that a kind registered later (records.register_kind) counts."""
    try:
        get_kind(kind)
    except DataprepError as exc:
        return str(exc)
    return None


@dataclasses.dataclass(frozen=True)
class ConvertOptions(EngineOptions, OutputOptions):
    """The convert stage's options (dataprep.options): CLI flags, recipe keys and `convert(**options)`."""

    kind: str = opt("sft", f"Record kind to produce: {', '.join(KINDS)}.", check=_kind_problem)
    template: str | None = opt(None, "sft prompt template: alpaca, ko-alpaca, latex, a format string with {column} "
                               "fields, or a template file (.txt, .json, .yaml). Default: alpaca.")
    mapping: dict[str, str] | None = opt(None, "Take a record field from a source column (repeatable), e.g. --map "
                                         "instruction=goal.", flag="--map", multiple=True, metavar="FIELD=COLUMN",
                                         cli=parse_map)
    row_fn: str | Callable | None = opt(None, "A function row dict → canonical fields; its exceptions become rejects. "
                                        "MODULE may be a path to a .py file.", metavar="MODULE:FUNCTION")
    fmt: str = opt("parquet", "Format of the records file.", choices=FORMATS, flag="--format")
    label_names: str | None = opt(None, "classify: file with one label name a line; labels given as ids index it "
                                  "(GoEmotions emotions.txt).", path="file")
    label_sep: str = opt(",", "classify: separator of labels given as one string.")
    delimiter: str | None = opt(None, "CSV/TSV field separator (detected when omitted; \\t for tab).",
                                cli=lambda v: "\t" if v == "\\t" else v, check=_one_byte("--delimiter"))
    encoding: str | None = opt(None, "Text encoding, e.g. cp949, euc-kr, latin-1 (detected when omitted).")
    quote_char: str | None = opt("auto", 'CSV/TSV quote character, or "none"; auto: " for CSV, none for .tsv.',
                                 cli=lambda v: None if v.lower() == "none" else v, check=_one_byte("--quote-char"))
    has_header: bool = opt(True, "CSV/TSV has no header row; columns are column_1, column_2, ...", flag="--no-header")
    split: str | None = opt(None, "Split of a datasets directory or hub: id (default: train).")
    batch_rows: int = opt(50_000, "Rows converted and written at a time; bounds memory.", min=1)
    limit: int | None = opt(None, "Read only the first N input rows (to try on a slice).", min=1)
    choices: tuple[str, ...] | None = opt(None, "sft: comma list of answer columns; the row's label picks the completion "
                                          "(multiple-choice data such as PIQA: --choice sol1,sol2).", flag="--choice",
                                          metavar="COLUMNS")
    choice_label: str = opt("label", "With --choice: the column holding the 0-based index of the right answer.")
    think: str = opt("keep", "chat: inline <think>...</think> at the start of an assistant turn: keep it as text, or "
                     "split it into reasoning_content.", choices=("keep", "split"))
    ignore_columns: tuple[str, ...] | None = opt(None, "Comma list of source columns you know convert leaves out (a `label` "
                                          "column on sft/chat data stops the run unless named here).")
    keep_columns: tuple[str, ...] | None = opt(None, "Comma list of source columns to carry through every stage in a "
                                               "`meta` struct column (e.g. id,category), or `all`: every column no "
                                               "record field uses.", metavar="COLUMNS")

    def reader(self) -> dict[str, Any]:
        """The reader options that differ from their defaults (how they were passed does not change
        the fingerprint)."""
        return {k: getattr(self, k) for k in READER if getattr(self, k) != getattr(ConvertOptions, k)}


def convert(sources: str | list[str], out: str, *, force: bool = False, **options: Any) -> Manifest:
    """Convert `sources` into canonical records of `kind` in directory `out`; `options` are the fields
    of ConvertOptions (kind, template, mapping, row_fn, fmt, ..., and the reader's).

    Writes OUT/records.parquet (or .jsonl), OUT/rejects.jsonl and OUT/manifest.json
    atomically (dataprep.stage), and returns the manifest. Works in batches of `batch_rows` rows (CSV and Parquet
    are also read in batches), so memory does not grow with the input. If OUT already holds a conversion with the same
    fingerprint (inputs' contents, options, version) the work is skipped and the existing
    manifest is returned with `skipped` set, unless `force`. `limit` reads only the first
    `limit` rows of the input (to try a recipe on a slice); the rest is not read at all.
    """
    o = parse_options(ConvertOptions, options, "convert")
    kind, template, mapping, row_fn, fmt = o.kind, o.template, o.mapping, o.row_fn, o.fmt
    label_names, label_sep, batch_rows, limit, reader_options = o.label_names, o.label_sep, o.batch_rows, o.limit, o.reader()
    sources = [sources] if isinstance(sources, (str, Path)) else list(sources)
    entry = get_kind(kind)
    tmpl = template_for(kind, template)
    choices = tuple(o.choices) if o.choices else None
    check_choices(kind, choices, row_fn, o.choice_label)
    fn = load_row_fn(row_fn) if isinstance(row_fn, str) else row_fn
    names = read_label_names(label_names) if label_names else None
    if label_names and kind != "classify":
        raise DataprepError("--label-names applies to --kind classify only; drop it")
    for p in sources:
        if not str(p).startswith("hub:") and not Path(p).exists():
            raise DataprepError(f"input {p} does not exist; check the path")
    config = _config(kind, tmpl, mapping, fn, fmt, label_names, label_sep, reader_options)
    if limit is not None:
        config["limit"] = limit
    if o.think != "keep":
        if kind != "chat":
            raise DataprepError("--think applies to --kind chat only; drop it")
        config["think"] = o.think
    if choices:
        config["choices"] = {"columns": list(choices), "label": o.choice_label}
    if o.keep_columns:
        config["keep_columns"] = list(o.keep_columns)
    config["sources"] = [source_name(str(p)) for p in sources]  # records name them (contents are fingerprinted anyway)

    def build(ws: Workspace) -> Outcome:
        def read():
            batches = iter_batches([str(p) for p in sources], batch_rows=batch_rows, **reader_options)
            return _first_rows(batches, limit) if limit is not None else batches

        summary = _convert_batches(read, ws.out / f"records.{fmt}", kind, ws.timer, o, template=tmpl, mapping=mapping,
                                   row_fn=fn, label_names=names, label_sep=label_sep, choices=choices,
                                   choice_label=o.choice_label, keep_columns=o.keep_columns, think=o.think)
        if summary.n_in == 0:
            raise DataprepError(f"{', '.join(map(str, sources))}: no rows to convert; check the input (and --no-header)")
        _question_labels(kind, summary.ignored, o.ignore_columns or ())
        rejects = Rejects()
        rejects.extend(summary.rejects)
        details: dict[str, Any] = {"format": fmt, "columns": list(entry.schema.names) + ["meta"] * bool(o.keep_columns),
                                   "ignored_columns": list(summary.ignored)}
        if choices:  # the output came from these columns, picked by the label
            details["choices"] = config["choices"]
        lineage: dict[str, Any] = {"kind": kind, "template": tmpl.as_config() if tmpl is not None else None}
        if kind == "classify":
            lineage["label_names"] = names or sorted(summary.labels)
            details["label_counts"] = {name: summary.labels.get(name, 0) for name in lineage["label_names"]}
        details["length_stats"] = summarize_lengths(summary.lengths)
        return Outcome(summary.n_in, summary.n_out, details, rejects=rejects, lineage=lineage)

    return run_stage("convert", out, inputs=[str(p) for p in sources], config=config, build=build, allow_empty=o.allow_empty,
                     data_files=(f"records.{fmt}",), force=force)


def _question_labels(kind: str, ignored, acknowledged) -> None:
    """A `label` column left out of sft/chat/preference records may say which answers are bad (KTO's
    desirable/undesirable): converting without it would make every answer a training target."""
    if kind not in ("sft", "chat", "preference"):
        return
    for column in ignored:
        if column.lower() in ("label", "labels", "kto_tag") and column not in acknowledged:
            raise DataprepError(
                f"column {column!r} looks like per-row labels (e.g. KTO's desirable/undesirable), and --kind {kind} "
                f"would train on every answer; pass --kind kto for desirable/undesirable answers, --kind classify for labels, "
                f"or --ignore-columns {column} to "
                "convert without it")


convert.config_class = ConvertOptions  # the options' one declaration: CLI, recipes, Python (dataprep.options)


def _first_rows(batches, limit: int):
    """The batches cut to `limit` rows in all."""
    left = limit
    for batch in batches:
        yield batch.head(left)
        left -= batch.height
        if left <= 0:  # stop before the next batch (or file) is read
            return


@dataclasses.dataclass
class _Summary:
    """What the batches add up to: row counts, rejects, text lengths, label frequencies."""

    n_in: int = 0
    n_out: int = 0
    rejects: list[dict] = dataclasses.field(default_factory=list)
    lengths: list = dataclasses.field(default_factory=list)
    labels: Counter = dataclasses.field(default_factory=Counter)
    ignored: dict = dataclasses.field(default_factory=dict)  # source columns no record field came from


@dataclasses.dataclass
class _Batch:
    """One converted batch: what `_convert_batch` returns, on any engine."""

    n_in: int
    records: Any  # polars frame of canonical records
    rejects: list[dict]
    ignored: list[str]
    lengths: Any
    labels: list


def _convert_batch(frame, kind: str, options: dict[str, Any]) -> _Batch:
    """The per-batch step an engine maps: records, rejects, ignored columns, lengths and labels of one frame."""
    records, rejects = convert_frame(frame, kind, **options)
    labels = records["labels"].explode().drop_nulls().to_list() if kind == "classify" else []
    return _Batch(frame.height, records, rejects, ignored_columns(frame.columns, kind, **options),
                  records.select(**length_exprs(kind)), labels)


def _local_batches(batches, kind: str, timer: Timer, options: dict[str, Any]):
    while True:
        with timer("read"):
            frame = next(batches, None)
        if frame is None:
            return
        with timer("convert"):
            yield _convert_batch(frame, kind, options)


def _convert_batches(read, path: Path, kind: str, timer: Timer, engine: EngineOptions, **options: Any) -> _Summary:
    """Convert and write batch by batch, so memory stays bounded by the batch size. `read()` yields the
    input frames; on the ray engine it runs in a Ray read task and `_convert_batch` in Ray tasks."""
    from tqdm import tqdm

    if engine.engine == "ray":
        results = timed(ray_map(functools.partial(_convert_batch, kind=kind, options=options), read,
                                address=engine.ray_address), timer, "convert")
    else:
        results = _local_batches(read(), kind, timer, options)
    summary = _Summary()
    writer = RecordWriter(path, kind)
    with writer, tqdm(desc=f"convert {kind}", unit="row", disable=None, leave=False) as bar:
        for batch in results:
            summary.ignored.update(dict.fromkeys(batch.ignored))
            summary.lengths.append(batch.lengths)
            summary.labels.update(batch.labels)
            with timer("write"):
                writer.write(batch.records)
            summary.n_in += batch.n_in
            summary.n_out += batch.records.height
            summary.rejects.extend(batch.rejects)
            bar.update(batch.n_in)
    return summary


class RecordWriter:
    """Appends record batches to OUT/records.parquet (one row group per batch) or records.jsonl. A
    `meta` column (--keep-columns) takes its fields and types from the first batch; a later batch
    lacking a field gets nulls, one with a new field or another type is a one-line error."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path, self.kind = Path(path), kind
        self.schema = get_kind(kind).schema
        self.meta = None  # the polars type of `meta`, from the first batch
        self._parquet = None
        self._fh = None

    def __enter__(self) -> RecordWriter:
        if self.path.suffix != ".parquet":
            self._fh = open(self.path, "wb")
        return self

    def write(self, records) -> None:
        if "meta" in records.columns:
            from dataprep.convert.frame import conform_meta

            self.meta = self.meta or records.schema["meta"]
            records = conform_meta(records, self.meta)
        if self.path.suffix == ".parquet":
            table = records.to_arrow()
            if self._parquet is None:
                import pyarrow.parquet as pq

                if "meta" in records.columns:
                    self.schema = self.schema.append(table.schema.field("meta"))
                self._parquet = pq.ParquetWriter(self.path, self.schema)
            self._parquet.write_table(table.select(self.schema.names).cast(self.schema))
        elif records.height:
            records.write_ndjson(self._fh)

    def __exit__(self, *exc: Any) -> None:
        if self._parquet is None and self.path.suffix == ".parquet" and exc[0] is None:
            import pyarrow.parquet as pq

            self._parquet = pq.ParquetWriter(self.path, self.schema)  # no batch: an empty file of the schema
        if self._parquet is not None:
            self._parquet.close()
        if self._fh is not None:
            self._fh.close()


def length_exprs(kind: str) -> dict:
    """Per-record lengths to summarise: characters of the kind's text fields; a message list: turns
    and characters."""
    import polars as pl

    entry = get_kind(kind)
    exprs = {}
    for c in entry.stats:
        if pa.types.is_list(entry.schema.field(c).type):
            exprs.update(turns=pl.col(c).list.len(),
                         chars=pl.col(c).list.eval(pl.element().struct.field("content").str.len_chars()).list.sum())
        else:
            exprs[c] = pl.col(c).str.len_chars()
    return exprs


def summarize_lengths(frames: list) -> dict[str, dict[str, float]]:
    """min, mean, p50, p95, max of each length column, to help choose a max length before tokenizing."""
    import polars as pl

    lengths = pl.concat(frames) if frames else pl.DataFrame()
    if lengths.height == 0:
        return {}
    return {name: {"min": int(lengths[name].min()), "mean": round(float(lengths[name].mean()), 1),
                   "p50": float(lengths[name].quantile(0.5)), "p95": float(lengths[name].quantile(0.95)),
                   "max": int(lengths[name].max())} for name in lengths.columns}


def _config(kind, tmpl, mapping, fn, fmt, label_names, label_sep, reader_options) -> dict:
    config: dict[str, Any] = {"kind": kind, "format": fmt, "mapping": dict(sorted((mapping or {}).items())),
                              "reader": dict(sorted(reader_options.items()))}
    if tmpl is not None:
        config["template"] = tmpl.as_config()
    if fn is not None:
        config["row_fn"] = row_fn_fingerprint(fn)
    if kind == "classify":
        config["label_sep"] = label_sep
        if label_names:
            config["label_names"] = {"path": label_names, "sha256": sha256_path(label_names)}
    return config
