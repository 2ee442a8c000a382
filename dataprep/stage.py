"""The stage contract: what every stage (convert, dedupe, tokenize, train, merge, ...) shares.

A stage declares its inputs and a frozen config; `run_stage` owns the rest, once:

    inputs → fingerprint (input contents + config + version) → skip when the output is current
    (its manifest's fingerprint matches and its data files are there) → an atomic output
    directory → the stage's `build` step → rejects with source/row/reason → counts checked
    `in = out + rejected` → timings → one typed `Manifest`, written once.

A stage is then its pure per-batch function plus the few whole-dataset steps of its `build`.
Adding a stage is one module that calls `run_stage`, plus its registration in the CLI and
`dataprep.recipe`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dataprep import __version__
from dataprep.errors import DataprepError, first_line, os_error_message
from dataprep.io import (
    MANIFEST,
    OWNER,
    atomic_dir,
    fingerprint,
    recover_stale,
    remove_stale_lock,
    sha256_path,
    write_json,
)
from dataprep.options import opt

REJECTS = "rejects.jsonl"


class Timer:
    """Collects wall-clock seconds per named step: `with timer("read"): ...`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 4)


class Rejects:
    """Rows a stage could not use, each with its source, row number and reason."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, source: str, row: int, reason: str, detail: str | None = None) -> None:
        self.rows.append({"source": source, "row": row, "reason": reason, "detail": detail})

    def extend(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def counts(self) -> dict[str, int]:
        return dict(Counter(r["reason"] for r in self.rows).most_common())

    def write(self, directory: str | os.PathLike) -> None:
        """Write `rejects.jsonl` (always, possibly empty, so its absence never means 'unknown')."""
        with open(Path(directory) / REJECTS, "w", encoding="utf-8") as fh:
            for r in sorted(self.rows, key=lambda r: (r["source"], r["row"])):
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")


@dataclasses.dataclass(frozen=True)
class OutputOptions:
    """Options every data stage takes about its output (they do not change what it holds)."""

    allow_empty: bool = opt(False, "Write the output even when no row is left; otherwise that is an error that names "
                                   "the top reasons.")


# ---------------------------------------------------------------- the manifest


@dataclasses.dataclass(frozen=True)
class Counts:
    """`in = out + rejected`; `by_reason` splits `rejected` (dedupe: removed rows by method)."""

    n_in: int
    n_out: int
    by_reason: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def rejected(self) -> int:
        return sum(self.by_reason.values())

    def check(self, stage: str) -> None:
        if self.n_in != self.n_out + self.rejected:
            raise AssertionError(f"{stage}: row accounting broken: in {self.n_in} != out {self.n_out} + rejected {self.rejected}")

    def to_json(self) -> dict[str, Any]:
        return {"in": self.n_in, "out": self.n_out, "rejected": self.rejected, "rejected_by_reason": dict(self.by_reason)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Counts:
        return cls(int(d.get("in", 0)), int(d.get("out", 0)), dict(d.get("rejected_by_reason") or {}))

    def line(self, removed_word: str = "rejected") -> str:
        """`in 1000 = out 990 + rejected 10 (empty output: 7, bad type: 3)`."""
        reasons = ", ".join(f"{k}: {v}" for k, v in self.by_reason.items())
        line = f"in {self.n_in} = out {self.n_out} + {removed_word} {self.rejected}"
        return f"{line} ({reasons})" if reasons else line


@dataclasses.dataclass(frozen=True)
class TokenizerInfo:
    """The tokenizer shards were made with, and the ids they rely on."""

    name: str
    fingerprint: str
    path: str | None = None
    pad_token_id: int | None = None
    eos_token_id: int | None = None


@dataclasses.dataclass(frozen=True)
class Lineage:
    """Facts that belong to the data and travel with it: each stage copies its input's lineage
    forward and adds what it decides. No stage looks for another stage's manifest on disk."""

    kind: str | None = None
    label_names: list[str] | None = None
    template: dict[str, Any] | None = None  # convert's prompt template (templates.Template.as_config())
    tokenizer: TokenizerInfo | None = None
    max_len: int | None = None
    packed: bool | None = None
    task: str | None = None  # train: what the model was trained for
    base_model: str | None = None  # train: the base model's name
    upstream: tuple[dict[str, str], ...] = ()  # {stage, fingerprint} of every earlier stage, oldest first

    def extend(self, **facts: Any) -> Lineage:
        if facts.get("label_names") is not None:
            facts["label_names"] = list(facts["label_names"])
        return dataclasses.replace(self, **facts)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["upstream"] = [dict(u) for u in self.upstream]
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> Lineage:
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if d.get("tokenizer"):
            d["tokenizer"] = TokenizerInfo(**{k: v for k, v in d["tokenizer"].items()
                                              if k in {f.name for f in dataclasses.fields(TokenizerInfo)}})
        d["upstream"] = tuple(d.get("upstream") or ())
        return cls(**d)


@dataclasses.dataclass
class Manifest:
    """What every stage writes as `manifest.json`. `details` holds the stage's own figures
    (shards, token statistics, ...), written at the top level of the JSON."""

    stage: str
    fingerprint: str
    inputs: list[dict[str, str]]
    config: dict[str, Any]
    counts: Counts
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    lineage: Lineage = dataclasses.field(default_factory=Lineage)
    files: dict[str, int] = dataclasses.field(default_factory=dict)  # every file written, with its size
    version: str = __version__
    skipped: bool = False  # set on the returned value when an up-to-date output was kept; never written

    BASE = ("stage", "version", "fingerprint", "inputs", "config", "counts", "timings", "lineage", "files")

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "version": self.version, "fingerprint": self.fingerprint, "inputs": self.inputs,
                "config": self.config, "counts": self.counts.to_json(), "timings": self.timings,
                "lineage": self.lineage.to_json(), "files": self.files, **self.details}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        return cls(stage=d.get("stage", "?"), fingerprint=d.get("fingerprint", ""), inputs=list(d.get("inputs") or []),
                   config=dict(d.get("config") or {}), counts=Counts.from_json(d.get("counts") or {}),
                   timings=dict(d.get("timings") or {}), details={k: v for k, v in d.items() if k not in cls.BASE},
                   lineage=Lineage.from_json(d.get("lineage")), files=dict(d.get("files") or {}),
                   version=d.get("version", "?"))

    def get(self, key: str, default: Any = None) -> Any:
        """A stage-specific figure from `details`."""
        return self.details.get(key, default)


def read_manifest(out_dir: str | os.PathLike) -> Manifest | None:
    """The manifest of a stage output directory, or None when there is none (or it is unreadable)."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return Manifest.from_json(data) if isinstance(data, dict) else None


def describe_inputs(paths: list[str]) -> list[dict[str, str]]:
    """Path and content hash for each local input; remote ids (e.g. `hub:...`) are kept as named."""
    out = []
    for p in paths:
        local = Path(p)
        out.append({"path": str(p), "sha256": sha256_path(local) if local.exists() else "remote"})
    return out


def stage_fingerprint(stage: str, inputs: list[dict[str, str]], config: dict[str, Any]) -> str:
    """A hash of what decides an output: the stage, the version, the config and the inputs' contents
    (not the paths they were named by: `ko.json` and `./ko.json` are one input)."""
    contents = [i["sha256"] if i.get("sha256") not in (None, "remote") else i["path"] for i in inputs]
    return fingerprint({"stage": stage, "version": __version__, "inputs": contents, "config": config})


# ---------------------------------------------------------------- running a stage


@dataclasses.dataclass
class Outcome:
    """What a stage's build step returns: its row counts and its own figures for the manifest."""

    n_in: int
    n_out: int
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    rejects: Rejects | None = None  # rows the stage could not use (written to rejects.jsonl)
    removed: dict[str, int] | None = None  # rows a stage removed on purpose, by reason (dedupe)
    lineage: dict[str, Any] = dataclasses.field(default_factory=dict)  # facts this stage adds to the lineage


@dataclasses.dataclass
class Workspace:
    """Where a build writes: `out` becomes the output directory; `scratch` is removed before that."""

    out: Path
    scratch: Path
    timer: Timer


def _is_current(out: Path, fp: str, data_files: tuple[str, ...]) -> Manifest | None:
    """The output's manifest if it was made from the same inputs and config and every file it
    wrote is still there with its size (a deleted or truncated file means: redo)."""
    manifest = read_manifest(out)
    if manifest is None or manifest.fingerprint != fp:
        return None
    if not all((out / f).exists() for f in data_files):
        return None
    for name, size in manifest.files.items():
        path = out / name
        if not path.is_file() or path.stat().st_size != size:
            return None
    return manifest


def _guard_inputs(stage: str, out: Path, inputs: list[str]) -> None:
    """Refuse an output equal to, inside or around an input: writing it would change or delete the input."""
    target = out.resolve()
    for p in inputs:
        path = Path(p)
        if not path.exists():
            continue
        # a stage's data file stands for its whole output directory
        guard = path.parent if path.is_file() and (path.parent / MANIFEST).is_file() else path
        guard = guard.resolve()
        where = ("the input" if target == guard else "inside the input" if guard in target.parents
                 else "around the input" if target in guard.parents else None)
        if where:
            raise DataprepError(f"-o {out} is {where} {p} of {stage}; writing it would change or delete the input; "
                                "choose another -o")


def _written_files(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in (MANIFEST, OWNER)}


def _empty_error(stage: str, counts: Counts) -> DataprepError:
    if counts.n_in == 0:
        return DataprepError(f"{stage}: the input has no rows; check the input or the previous stage, or pass "
                             "--allow-empty to write an empty output")
    top = ", ".join(f"{k}: {v}" for k, v in list(counts.by_reason.items())[:3])
    because = f" ({top})" if top else ""
    return DataprepError(f"{stage}: no rows left out of {counts.n_in}{because}; fix the input or the options, "
                         "or pass --allow-empty to write an empty output")


def run_stage(stage: str, out: str | os.PathLike, *, inputs: list[str], config: Any,
              build: Callable[[Workspace], Outcome], data_files: tuple[str, ...] = (), force: bool = False,
              upstream: Manifest | None = None, allow_empty: bool = False) -> Manifest:
    """Run one stage into `out` and return its manifest (with `skipped` set when it was current).

    `config` is a frozen dataclass or a JSON-ready dict: everything that decides the output.
    `data_files` are the files (relative to `out`) an up-to-date output must still have.
    `build` does the work into `ws.out`; it raises DataprepError for bad input, and nothing is
    left behind then. `upstream` is the manifest of the stage's input, whose lineage this output
    extends with the facts its `Outcome.lineage` adds. An output with no rows is an error unless
    `allow_empty`.
    """
    out = Path(out)
    _guard_inputs(stage, out, inputs)
    config = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    described = describe_inputs([str(p) for p in inputs])
    fp = stage_fingerprint(stage, described, config)
    recover_stale(out)  # an output a killed run moved aside counts as current again
    remove_stale_lock(out)
    if not force and (done := _is_current(out, fp, data_files)):
        done.skipped = True
        return done
    timer = Timer()
    try:
        manifest = _write(stage, out, fp, described, config, build, timer, upstream, allow_empty)
    except DataprepError:
        raise  # already one line (even when it quotes a library's "(os error N)")
    except OSError as exc:  # a full disk, a permission: one line, and atomic_dir has removed the partial output
        raise DataprepError(f"{stage}: {os_error_message(exc, str(out))}") from None
    except Exception as exc:  # a library's own error type around an OS error (polars: "... (os error 28)")
        code = os_errno(exc)
        if code is None:
            raise
        raise DataprepError(f"{stage}: {os_error_message(OSError(code, first_line(exc)), str(out))}") from None
    return manifest


def os_errno(exc: BaseException) -> int | None:
    """The errno a library's exception wraps, when its message ends an OS error as Rust and C
    libraries write it (polars: `File too large (os error 27)`), else None."""
    import re

    found = re.search(r"\(os error (\d+)\)", str(exc))
    return int(found.group(1)) if found else None


def _write(stage, out, fp, described, config, build, timer, upstream, allow_empty) -> Manifest:
    """The atomic part of `run_stage`: build into a temporary directory, check, write the manifest."""
    with atomic_dir(out) as tmp:
        scratch = tmp / ".scratch"
        scratch.mkdir()
        try:
            outcome = build(Workspace(tmp, scratch, timer))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        by_reason = dict(outcome.removed or {}) if outcome.removed is not None else (
            outcome.rejects.counts() if outcome.rejects is not None else {})
        counts = Counts(outcome.n_in, outcome.n_out, by_reason)
        counts.check(stage)
        if counts.n_out == 0 and not allow_empty:
            raise _empty_error(stage, counts)
        if outcome.rejects is not None:
            outcome.rejects.write(tmp)
        lineage = upstream_lineage(upstream).extend(**outcome.lineage)
        manifest = Manifest(stage, fp, described, config, counts, dict(timer.seconds), outcome.details, lineage,
                            _written_files(tmp))
        write_json(tmp / MANIFEST, manifest.to_json())
    return manifest


def upstream_lineage(upstream: Manifest | None) -> Lineage:
    """The lineage an output of `upstream` starts from: the upstream's, plus the upstream itself."""
    if upstream is None:
        return Lineage()
    return upstream.lineage.extend(
        upstream=upstream.lineage.upstream + ({"stage": upstream.stage, "fingerprint": upstream.fingerprint},))


def scan_records(path: str | os.PathLike, verb: str) -> tuple[Path, Manifest | None, str | None, list[str]]:
    """(data file, its stage manifest or None, record kind, columns) of a records input, read from
    its schema before the rows; an empty file is a one-line error saying there is nothing to `verb`.
    The manifest beside the data file is read whether the stage directory or its file was named,
    so the lineage travels either way."""
    from dataprep.io import find_data_file, record_columns
    from dataprep.records import infer_kind

    data = find_data_file(path)
    if data.stat().st_size == 0:
        raise DataprepError(f"{data} is empty (0 bytes): there are no rows to {verb}; check the path or the previous stage")
    manifest_in = read_manifest(data.parent)
    columns = record_columns(data)
    return data, manifest_in, (manifest_in.lineage.kind if manifest_in else None) or infer_kind(columns), columns
