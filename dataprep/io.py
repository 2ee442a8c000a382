"""Files in and out: content hashes, atomic files and output directories, and the records file.

An output directory is built under a temporary sibling name and renamed into place only when
complete, so a killed run never leaves an output that looks finished. What a stage writes into
it, and when a rerun is skipped, is the stage contract's business (dataprep.stage).

The next stage reads the records a stage wrote (`find_data_file`, `read_records`,
`record_columns`, `record_count`). Input files in other formats (CSV, JSON, Parquet, Hub, ...)
are read by `dataprep.sources`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dataprep.errors import DataprepError

MANIFEST = "manifest.json"  # every stage output directory has one (dataprep.stage writes it)


def sha256_path(path: str | os.PathLike) -> str:
    """Content hash of a file, or of every file below a directory (names and bytes, sorted)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        hash_file_into(h, f)
    return h.hexdigest()


def hash_file_into(h, path: str | os.PathLike) -> None:
    """Feed a file's bytes to the hash object `h`, 1 MB at a time (a file may be larger than memory)."""
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)


def fingerprint(obj: Any) -> str:
    """A stable hash of any JSON-serialisable value (dict keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


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
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataprepError(f"cannot create the parent of -o {out}: {exc.strerror}; choose another -o") from None
    with _output_lock(out):
        recover_stale(out)
        if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).exists():
            raise DataprepError(
                f"output directory {out} exists and is not a dataprep output; choose another -o or remove it"
            )
        tmp = _owned_tempdir(out, "tmp")
        try:
            yield tmp
            (tmp / OWNER).unlink()
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if out.exists():
            old = _owned_tempdir(out, "old")  # a kill between the two renames is undone by recover_stale
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)


OWNER = ".dataprep-owner"  # in a temporary directory: the pid of the run that writes it


def _owned_tempdir(out: Path, kind: str) -> Path:
    """A hidden sibling `.OUT.tmp-*` (or `.OUT.old-*`) marked with this process's pid."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{kind}-", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the output is an ordinary directory
        (tmp / OWNER).write_text(str(os.getpid()))
    except BaseException:  # a full disk before the mark: an unmarked temporary no later run would remove
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def recover_stale(out: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that killed runs left beside `out` (no live process owns them), and
    put back an output that a run killed in the middle of its `--force` swap left in `.OUT.old-*`.
    Returns what was removed."""
    out = Path(out)
    removed = []
    for kind in ("old", "tmp"):
        for path in sorted(out.parent.glob(f".{out.name}.{kind}-*")):
            owner = path / OWNER
            try:
                pid = int(owner.read_text())
            except (OSError, ValueError):
                continue  # not ours (or not readable): leave it alone
            if _alive(pid) and pid != os.getpid():
                continue
            if kind == "old" and (path / "x").is_dir() and not out.exists():
                os.replace(path / "x", out)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def _output_lock(out: Path) -> Iterator[None]:
    """Hold `.OUT.lock` beside `out` while writing it, so two runs never write one output."""
    import fcntl

    lock = _lock_path(out)
    while True:
        fh = open(lock, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise DataprepError(f"another dataprep run is writing {out} now; wait for it to finish or choose "
                                "another -o") from None
        if _is_open_file(fh, lock):
            break
        fh.close()  # the file was removed between our open and our lock (its holder finished): lock the new one
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        fh.close()


def _lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


def _is_open_file(fh, path: Path) -> bool:
    """Whether `path` still names the file `fh` has open."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (os.fstat(fh.fileno()).st_dev, os.fstat(fh.fileno()).st_ino)


def remove_stale_lock(out: str | os.PathLike) -> None:
    """Remove `.OUT.lock` that a killed run left behind (no live run holds it); a held one stays."""
    import fcntl

    lock = _lock_path(Path(out))
    if not lock.is_file():
        return
    try:
        fh = open(lock, "a+")
    except OSError:
        return
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # a live run is writing
        if _is_open_file(fh, lock):
            lock.unlink(missing_ok=True)


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
    """Read canonical records (a stage directory or a .parquet/.jsonl file) into a polars frame."""
    import polars as pl

    data = find_data_file(path)
    _check_records_suffix(data)
    try:
        return pl.read_parquet(data) if data.suffix == ".parquet" else pl.read_ndjson(data)
    except Exception as exc:  # polars raises several types for unreadable files
        raise _records_error(data, exc) from None


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
