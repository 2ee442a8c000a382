"""Stage plumbing and the records file: content hashes, atomic outputs, manifests, rejects, timers;
finding and reading the records a stage wrote.

Every stage writes one output directory: its data file(s), `manifest.json` and, when rows
were dropped, `rejects.jsonl`. The directory is built under a temporary sibling name and
renamed into place only when complete, so a killed run never leaves an output that looks
finished. The manifest carries a fingerprint of (stage, version, input contents, config);
a rerun whose fingerprint matches is skipped.

The next stage reads those records (`find_data_file`, `read_records`, `record_columns`,
`record_count`). Input files in other formats (CSV, JSON, Parquet, Hub, ...) are read by
`dataprep.sources`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dataprep import __version__
from dataprep.errors import DataprepError

MANIFEST = "manifest.json"
REJECTS = "rejects.jsonl"


def sha256_path(path: str | os.PathLike) -> str:
    """Content hash of a file, or of every file below a directory (names and bytes, sorted)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def fingerprint(obj: Any) -> str:
    """A stable hash of any JSON-serialisable value (dict keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def describe_inputs(paths: list[str]) -> list[dict[str, str]]:
    """Path and content hash for each local input; remote ids (e.g. `hub:...`) are kept as named."""
    out = []
    for p in paths:
        local = Path(p)
        out.append({"path": str(p), "sha256": sha256_path(local) if local.exists() else "remote"})
    return out


def stage_fingerprint(stage: str, inputs: list[dict[str, str]], config: dict[str, Any]) -> str:
    return fingerprint({"stage": stage, "version": __version__, "inputs": inputs, "config": config})


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def current_manifest(out_dir: str | os.PathLike, fp: str) -> dict[str, Any] | None:
    """The existing manifest of `out_dir` if its fingerprint is `fp` (the output is up to date)."""
    manifest = read_manifest(out_dir)
    return manifest if manifest and manifest.get("fingerprint") == fp else None


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers that go by it still work)
    that replaces `path` only if the block completes: a killed run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(name)
        os.chmod(name, 0o644)  # mkstemp makes it private; the output is an ordinary file
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory that replaces `out_dir` only if the block completes.

    An existing `out_dir` is replaced only if it is a dataprep output (has a manifest) or is
    empty, so a typo'd `-o` never deletes a user's unrelated directory.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataprepError(f"output {out} exists and is a file; pass a directory path to -o")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).exists():
        raise DataprepError(
            f"output directory {out} exists and is not a dataprep output; choose another -o or remove it"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the output is an ordinary directory
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "x")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


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


def make_manifest(
    stage: str,
    fp: str,
    inputs: list[dict[str, str]],
    config: dict[str, Any],
    n_in: int,
    n_out: int,
    rejected: dict[str, int],
    timings: dict[str, float],
    **extra: Any,
) -> dict[str, Any]:
    """The manifest every stage writes. Checks that every input row is accounted for."""
    n_rejected = sum(rejected.values())
    if n_in != n_out + n_rejected:
        raise AssertionError(f"{stage}: row accounting broken: in {n_in} != out {n_out} + rejected {n_rejected}")
    return {
        "stage": stage,
        "version": __version__,
        "fingerprint": fp,
        "inputs": inputs,
        "config": config,
        "counts": {"in": n_in, "out": n_out, "rejected": n_rejected, "rejected_by_reason": rejected},
        "timings": timings,
        **extra,
    }


def counts_line(counts: dict[str, Any], removed_word: str = "rejected") -> str:
    """`in 1000 = out 990 + rejected 10 (empty output: 7, bad type: 3)` from a manifest's counts."""
    reasons = ", ".join(f"{k}: {v}" for k, v in counts.get("rejected_by_reason", {}).items())
    line = f"in {counts['in']} = out {counts['out']} + {removed_word} {counts['rejected']}"
    return f"{line} ({reasons})" if reasons else line


def find_data_file(path: str | os.PathLike, stem: str = "records") -> Path:
    """The data file of a stage directory (`records.parquet` or `records.jsonl`), or `path` itself."""
    path = Path(path)
    if path.is_dir():
        for ext in (".parquet", ".jsonl"):
            if (path / f"{stem}{ext}").is_file():
                return path / f"{stem}{ext}"
        raise DataprepError(f"{path} holds no {stem}.parquet or {stem}.jsonl; pass the output directory of the previous stage")
    if not path.exists():
        raise DataprepError(f"{path} does not exist; check the path")
    return path


def read_records(path: str | os.PathLike):
    """Read canonical records (a stage directory or a .parquet/.jsonl file) into a polars frame.

    Returns (frame, manifest or None). The manifest tells the record kind and label names.
    """
    import polars as pl

    data = find_data_file(path)
    manifest = read_manifest(data.parent) if Path(path).is_dir() else None
    _check_records_suffix(data)
    try:
        frame = pl.read_parquet(data) if data.suffix == ".parquet" else pl.read_ndjson(data)
    except Exception as exc:  # polars raises several types for unreadable files
        raise _records_error(data, exc) from None
    return frame, manifest


RECORD_SUFFIXES = (".parquet", ".jsonl", ".ndjson")


def _check_records_suffix(data: Path) -> None:
    if data.suffix.lower() not in RECORD_SUFFIXES:
        raise DataprepError(f"{data} is not a records file (.parquet or .jsonl); make one with `dataprep convert {data} -o DIR`")


def _records_error(data: Path, exc: BaseException) -> DataprepError:
    return DataprepError(f"cannot read records from {data} ({str(exc).splitlines()[0][:120]}); check that it is "
                         "parquet or JSON lines (one object a line), or make records with `dataprep convert`")


def record_columns(data: Path) -> list[str]:
    """Column names of a records file (from `find_data_file`) without loading it: parquet
    metadata, or the schema a lazy JSON-lines scan infers from the first rows."""
    _check_records_suffix(data)
    try:
        if data.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_schema(data).names
        import polars as pl

        return pl.scan_ndjson(data).collect_schema().names()
    except Exception as exc:  # pyarrow and polars raise several types for unreadable files
        raise _records_error(data, exc) from None


def record_count(data: Path) -> int:
    """Rows of a records file: parquet metadata, or one streaming pass over JSON lines."""
    _check_records_suffix(data)
    try:
        if data.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(data).metadata.num_rows
        import polars as pl

        return int(pl.scan_ndjson(data).select(pl.len()).collect().item())
    except Exception as exc:
        raise _records_error(data, exc) from None
