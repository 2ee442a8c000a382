"""Files in and out: content hashes, atomic output directories, manifests, rejects.

Every stage writes one output directory: its data file(s), `manifest.json` and, when rows
were dropped, `rejects.jsonl`. The directory is built under a temporary sibling name and
renamed into place only when complete, so a killed run never leaves an output that looks
finished. The manifest carries a fingerprint of (stage, version, input contents, config);
a rerun whose fingerprint matches is skipped.
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


# ---------------------------------------------------------------------------------------
# Input readers: any supported source → one polars frame with `source` and `row` columns.
# ---------------------------------------------------------------------------------------

HUB_PREFIX = "hub:"
SNIFF_BYTES = 1 << 16
FULL_UTF8_CHECK_BYTES = 64 << 20  # decoding to validate runs at ~200 MB/s on a busy core
PREFERRED_ENCODINGS = ("utf_8", "cp949", "cp1252", "latin_1", "iso8859_15")


def iter_batches(paths: list[str], batch_rows: int = 50_000, **options: Any) -> Iterator:
    """Yield the rows of several sources as polars frames of at most `batch_rows` rows, each row with
    its `source` (as given) and 0-based `row` within that source. Options go to `read_table`
    (delimiter, encoding, has_header, quote_char, split). UTF-8 CSV/TSV files and Parquet are scanned in
    batches, so memory stays bounded whatever the file size; other formats are read whole, then sliced.
    A missing source raises DataprepError before the first batch.
    """
    import polars as pl

    if not paths:
        raise DataprepError("no input given; pass one or more files, directories or hub:NAME ids")
    for p in paths:
        if not p.startswith(HUB_PREFIX) and not Path(p).exists():
            raise DataprepError(f"input {p} does not exist; check the path")
    for p in paths:
        offset = 0
        for batch in _source_batches(p, batch_rows, **options):
            yield batch.with_columns(source=pl.lit(str(p)),
                                     row=pl.int_range(offset, offset + pl.len(), dtype=pl.Int64))
            offset += batch.height


def _source_batches(path: str, batch_rows: int, **options: Any) -> Iterator:
    import polars as pl

    p = Path(path)
    name = p.name.lower()
    if not path.startswith(HUB_PREFIX) and p.is_file() and name.endswith((".csv", ".tsv", ".tab")):
        source, sep, quote = _csv_plan(p, delimiter=options.get("delimiter"), encoding=options.get("encoding"),
                                       quote_char=options.get("quote_char", "auto"), gz=False, whole_file_utf8=True)
        try:
            yield from _scan_csv(source, sep, options.get("has_header", True), quote).collect_batches(chunk_size=batch_rows)
        except pl.exceptions.PolarsError as exc:
            if "utf-8" in str(exc).lower() and isinstance(source, Path):
                raise _late_encoding_error(p) from None
            raise _csv_error(p, source, sep, quote, exc) from None
    elif not path.startswith(HUB_PREFIX) and p.is_file() and name.endswith(".parquet"):
        try:
            yield from pl.scan_parquet(p).collect_batches(chunk_size=batch_rows)
        except pl.exceptions.PolarsError as exc:
            raise DataprepError(f"cannot read {path}: {_first_line(exc)}; check that the file is complete") from None
    else:
        yield from read_table(path, **options).iter_slices(batch_rows)


def read_table(
    path: str,
    *,
    delimiter: str | None = None,
    encoding: str | None = None,
    has_header: bool = True,
    quote_char: str | None = "auto",
    split: str | None = None,
):
    """Read one source into a polars frame (no provenance columns).

    CSV/TSV (delimiter and encoding detected unless given; `quote_char` "auto" is `"` for
    CSV and none for .tsv files, None turns quoting off), JSON array, JSONL, plain text
    (.txt: one row per line, column `text`), gzip of any of these, Parquet, a `datasets`
    save_to_disk directory, or `hub:NAME[:split]`.
    """
    import polars as pl

    if path.startswith(HUB_PREFIX):
        return _read_hub(path[len(HUB_PREFIX):], split)
    p = Path(path)
    if p.is_dir():
        return _read_saved_dataset(p, split)
    name = p.name.lower().removesuffix(".gz")
    raw_opener = _open_gzip if p.name.lower().endswith(".gz") else None
    try:
        if name.endswith(".parquet"):
            return pl.read_parquet(p)
        if name.endswith((".jsonl", ".ndjson")):
            return _read_json_lines(p, raw_opener, encoding)
        if name.endswith(".json"):
            return _read_json(p, raw_opener, encoding)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataprepError(f"cannot read {path}: {_first_line(exc)}; check that the file is complete and in that format") from None
    if name.endswith(".txt"):
        return _read_lines(p, raw_opener, encoding)
    if name.endswith((".csv", ".tsv", ".tab")):
        return _read_csv(p, delimiter=delimiter, encoding=encoding, has_header=has_header,
                         quote_char=quote_char, gz=raw_opener is not None)
    raise DataprepError(
        f"cannot tell the format of {path}; use one of .csv .tsv .json .jsonl .txt .parquet (optionally .gz) or a datasets directory"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _open_gzip(path: Path) -> bytes:
    import gzip

    try:
        with gzip.open(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError) as exc:
        raise DataprepError(f"cannot read {path}: not a complete gzip file ({_first_line(exc)})") from None


def _read_bytes(path: Path, opener) -> bytes:
    return opener(path) if opener else path.read_bytes()


def _decode(data: bytes, path: Path, encoding: str | None) -> str:
    """Decode with the given encoding, else UTF-8 (BOM allowed), else what charset-normalizer detects."""
    if encoding:
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise DataprepError(f"cannot decode {path} as {encoding}: {_first_line(exc)}; pass the right --encoding") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = _best_match(from_bytes(data))
    if best is None:
        raise DataprepError(f"cannot detect the text encoding of {path}; pass --encoding (e.g. cp949, latin-1)")
    return str(best)


def _best_match(matches):
    """charset-normalizer's best match; among equally good fits (short samples fit several code pages)
    the common ones win: cp1252 is what "latin-1" files usually are, cp949 is a superset of euc-kr."""
    best = matches.best()
    if best is None:
        return None
    tied = {m.encoding: m for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence)}
    return next((tied[e] for e in PREFERRED_ENCODINGS if e in tied), best)


def _json_error(path: Path, exc: json.JSONDecodeError, line: int | None = None) -> DataprepError:
    return DataprepError(
        f"{path} is not valid JSON at line {line or exc.lineno}, column {exc.colno}: {exc.msg}; fix or remove that line"
    )


def _read_json(path: Path, opener, encoding: str | None = None):
    text = _decode(_read_bytes(path, opener), path, encoding)
    stripped = text.lstrip()
    if stripped and stripped[0] == "{" and "\n" in stripped.strip():
        # several objects, one per line: JSON Lines with a .json suffix
        try:
            json.loads(stripped)
        except json.JSONDecodeError:
            return frame_from_rows(_parse_json_lines(text, path), path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _json_error(path, exc) from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise DataprepError(f"{path} holds a JSON {type(data).__name__}; expected an array of objects or JSON Lines")
    return frame_from_rows(data, path)


def _read_json_lines(path: Path, opener, encoding: str | None = None):
    text = _decode(_read_bytes(path, opener), path, encoding)
    return frame_from_rows(_parse_json_lines(text, path), path)


def _parse_json_lines(text: str, path: Path) -> list:
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise _json_error(path, exc, lineno) from None
    return rows


def frame_from_rows(rows: list, path: str | os.PathLike = "rows"):
    """Column-wise frame from dicts (JSON objects). All-string columns are String; any other column keeps
    the Python values as an Object column, so a wrong type is still visible (and rejected) per row later.
    `path` only names the rows in errors."""
    import polars as pl

    names: dict[str, None] = {}
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise DataprepError(f"{path} row {i} is a JSON {type(r).__name__}, not an object; each row must be an object")
        names.update(dict.fromkeys(r))
    columns = []
    for name in names:
        values = [r.get(name) for r in rows]
        if all(v is None or isinstance(v, str) for v in values):
            columns.append(pl.Series(name, values, dtype=pl.String))
        else:
            columns.append(pl.Series(name, values, dtype=pl.Object))
    return pl.DataFrame(columns, height=len(rows)) if columns else pl.DataFrame(height=len(rows))


def _read_lines(path: Path, opener, encoding: str | None):
    """A plain text file: one row per line, in a `text` column (blank lines are kept, and rejected later)."""
    import polars as pl

    text = _decode(_read_bytes(path, opener), path, encoding)
    return pl.DataFrame({"text": text.splitlines()}, schema={"text": pl.String})


def _sniff_delimiter(sample: str, name: str) -> str:
    import csv

    if name.endswith((".tsv", ".tab")):
        return "\t"
    lines = "\n".join(sample.splitlines()[:20])
    try:
        return csv.Sniffer().sniff(lines, delimiters=",\t;|").delimiter
    except csv.Error:
        return ","


def _csv_plan(path: Path, *, delimiter, encoding, quote_char, gz, whole_file_utf8: bool = False):
    """(source, separator, quote_char) for polars: the path itself when the file is UTF-8 (fast, low
    memory), else the decoded bytes. `whole_file_utf8` checks every byte of files up to
    FULL_UTF8_CHECK_BYTES, not just the sniffed head (a larger file is streamed; a bad byte late in
    it stops the run with a one-line error that names the encoding to pass)."""
    name = path.name.lower().removesuffix(".gz")
    if gz:
        data: bytes | None = _open_gzip(path)
        head = data[:SNIFF_BYTES]
    else:
        data = None
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    source: Any = path if data is None else data
    if encoding and encoding.lower().replace("-", "").replace("_", "") not in ("utf8", "utf8sig"):
        source = _decode(data if data is not None else path.read_bytes(), path, encoding).encode("utf-8")
    elif not encoding and not (_is_utf8_file(path) if whole_file_utf8 and data is None and
                               path.stat().st_size <= FULL_UTF8_CHECK_BYTES else _looks_utf8(head)):
        source = _decode(data if data is not None else path.read_bytes(), path, None).encode("utf-8")
    sample = (source[:SNIFF_BYTES] if isinstance(source, bytes) else head).decode("utf-8", errors="ignore")
    sep = delimiter or _sniff_delimiter(sample, name)
    if quote_char == "auto":  # TSV has no quoting (IANA); quotes inside text (GoEmotions) are literal
        quote_char = None if sep == "\t" and name.endswith((".tsv", ".tab")) else '"'
    return source, sep, quote_char


def _scan_csv(source, sep: str, has_header: bool, quote_char: str | None):
    """A lazy CSV scan, every column a string; without a header the columns are column_1, column_2, ..."""
    import polars as pl

    return pl.scan_csv(source, separator=sep, has_header=has_header, infer_schema=False, quote_char=quote_char,
                       with_column_names=None if has_header else _numbered_columns)


def _late_encoding_error(path: Path) -> DataprepError:
    from charset_normalizer import from_path

    best = _best_match(from_path(path))
    guess = best.encoding.replace("_", "-") if best else "cp949"
    return DataprepError(f"{path} starts as UTF-8 but has other bytes further on; pass --encoding {guess} "
                         "(or the file's real encoding)")


def _numbered_columns(columns: list[str]) -> list[str]:
    return [f"column_{i}" for i in range(1, len(columns) + 1)]


def _csv_error(path: Path, source, sep: str, quote_char: str | None, exc: BaseException) -> DataprepError:
    line = _bad_csv_line(source, sep, quote_char)
    where = f" at line {line}" if line else ""
    return DataprepError(f"cannot parse {path}{where}: {_first_line(exc)}; fix that line, or pass --delimiter/--encoding")


def _read_csv(path: Path, *, delimiter, encoding, has_header, quote_char, gz):
    """CSV/TSV via polars, all columns as strings. Parse errors name the first bad line."""
    import polars as pl

    source, sep, quote_char = _csv_plan(path, delimiter=delimiter, encoding=encoding, quote_char=quote_char, gz=gz)
    try:
        try:
            return _scan_csv(source, sep, has_header, quote_char).collect()
        except pl.exceptions.ComputeError as exc:
            if "utf-8" not in str(exc).lower() or encoding or not isinstance(source, Path):
                raise
            # the sample was UTF-8 but a later line is not: decode the whole file and read again
            source = _decode(path.read_bytes(), path, None).encode("utf-8")
            return _scan_csv(source, sep, has_header, quote_char).collect()
    except pl.exceptions.PolarsError as exc:
        raise _csv_error(path, source, sep, quote_char, exc) from None


def _is_utf8_file(path: Path) -> bool:
    """Whether every byte of the file is valid UTF-8, in 4 MB blocks (so streaming never meets a bad byte late)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                decoder.decode(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _looks_utf8(head: bytes) -> bool:
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a multi-byte character cut at the sample's end


def _bad_csv_line(source, sep: str, quote_char: str | None) -> int | None:
    """1-based line where the first row whose field count differs from the header's starts
    (an unclosed quote swallows the rest of the file into one field, so it shows up here too)."""
    import csv
    import io as _io

    text = source.decode("utf-8", errors="replace") if isinstance(source, bytes) else Path(source).read_text(errors="replace")
    reader = csv.reader(_io.StringIO(text), delimiter=sep, quotechar=quote_char or '"',
                        quoting=csv.QUOTE_MINIMAL if quote_char else csv.QUOTE_NONE)
    width, start = None, 1
    try:
        for row in reader:
            if width is None:
                width = len(row)
            elif row and len(row) != width:
                return start
            start = reader.line_num + 1
    except csv.Error:
        return start
    return None


def _dataset_to_frame(ds, what: str, split: str | None):
    """A `datasets` Dataset (or one split of a DatasetDict) as a polars frame."""
    import datasets

    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        splits = list(ds)
        pick = split or ("train" if "train" in ds else splits[0] if len(splits) == 1 else None)
        if pick not in ds:
            raise DataprepError(f"{what} has splits {', '.join(splits)}; name one, e.g. {what}:{splits[0]}")
        ds = ds[pick]
    return ds.to_polars()


def _read_saved_dataset(path: Path, split: str | None):
    import datasets

    if not any((path / f).is_file() for f in ("dataset_info.json", "dataset_dict.json", "state.json")):
        raise DataprepError(f"{path} is a directory but not a datasets save_to_disk directory; pass a file or such a directory")
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises many types for damaged directories
        raise DataprepError(f"cannot load datasets directory {path}: {_first_line(exc)}") from None
    return _dataset_to_frame(ds, str(path), split)


def _read_hub(spec: str, split: str | None):
    """`NAME[:split]` through datasets.load_dataset; then the same path as a save_to_disk directory."""
    import datasets

    name, _, spec_split = spec.partition(":")
    split = spec_split or split
    if not name:
        raise DataprepError("hub: needs a dataset id, e.g. hub:tatsu-lab/alpaca:train")
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # offline, unknown id, missing split: all one line for the user
        raise DataprepError(
            f"cannot load Hub dataset {name}: {_first_line(exc)}; check the id and network "
            "(HF_HUB_OFFLINE=1 allows only cached datasets), or save it locally and pass the directory"
        ) from None
    return _dataset_to_frame(ds, f"hub:{name}", split)
