"""CSV and TSV: delimiter and encoding detected unless given; read whole, or scanned in batches
(a UTF-8 file straight from disk, anything else decoded first). Parse errors name the bad line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dataprep.errors import DataprepError, first_line
from dataprep.sources.decoding import best_match, decode, open_gzip

SNIFF_BYTES = 1 << 16
FULL_UTF8_CHECK_BYTES = 64 << 20  # decoding to validate runs at ~200 MB/s on a busy core


def read_csv(path: Path, *, delimiter, encoding, has_header, quote_char, gz):
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
            source = decode(path.read_bytes(), path, None).encode("utf-8")
            return _scan_csv(source, sep, has_header, quote_char).collect()
    except pl.exceptions.PolarsError as exc:
        raise _csv_error(path, source, sep, quote_char, exc) from None


def csv_batches(path: Path, batch_rows: int, *, delimiter, encoding, has_header, quote_char) -> Iterator:
    """A CSV/TSV file scanned in frames of at most `batch_rows` rows (every byte checked for UTF-8
    first if the file is not too large; see `_csv_plan`)."""
    import polars as pl

    source, sep, quote = _csv_plan(path, delimiter=delimiter, encoding=encoding,
                                   quote_char=quote_char, gz=False, whole_file_utf8=True)
    try:
        yield from _scan_csv(source, sep, has_header, quote).collect_batches(chunk_size=batch_rows)
    except pl.exceptions.PolarsError as exc:
        if "utf-8" in str(exc).lower() and isinstance(source, Path):
            raise _late_encoding_error(path) from None
        raise _csv_error(path, source, sep, quote, exc) from None


def _csv_plan(path: Path, *, delimiter, encoding, quote_char, gz, whole_file_utf8: bool = False):
    """(source, separator, quote_char) for polars: the path itself when the file is UTF-8 (fast, low
    memory), else the decoded bytes. `whole_file_utf8` checks every byte of files up to
    FULL_UTF8_CHECK_BYTES, not just the sniffed head (a larger file is streamed; a bad byte late in
    it stops the run with a one-line error that names the encoding to pass)."""
    name = path.name.lower().removesuffix(".gz")
    if gz:
        data: bytes | None = open_gzip(path)
        head = data[:SNIFF_BYTES]
    else:
        data = None
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    source: Any = path if data is None else data
    if encoding and encoding.lower().replace("-", "").replace("_", "") not in ("utf8", "utf8sig"):
        source = decode(data if data is not None else path.read_bytes(), path, encoding).encode("utf-8")
    elif not encoding and not (_is_utf8_file(path) if whole_file_utf8 and data is None and
                               path.stat().st_size <= FULL_UTF8_CHECK_BYTES else _looks_utf8(head)):
        source = decode(data if data is not None else path.read_bytes(), path, None).encode("utf-8")
    sample = (source[:SNIFF_BYTES] if isinstance(source, bytes) else head).decode("utf-8", errors="ignore")
    sep = delimiter or _sniff_delimiter(sample, name)
    if quote_char == "auto":  # TSV has no quoting (IANA); quotes inside text (GoEmotions) are literal
        quote_char = None if sep == "\t" and name.endswith((".tsv", ".tab")) else '"'
    return source, sep, quote_char


def _sniff_delimiter(sample: str, name: str) -> str:
    import csv

    if name.endswith((".tsv", ".tab")):
        return "\t"
    lines = "\n".join(sample.splitlines()[:20])
    try:
        return csv.Sniffer().sniff(lines, delimiters=",\t;|").delimiter
    except csv.Error:
        return ","


def _scan_csv(source, sep: str, has_header: bool, quote_char: str | None):
    """A lazy CSV scan, every column a string; without a header the columns are column_1, column_2, ..."""
    import polars as pl

    return pl.scan_csv(source, separator=sep, has_header=has_header, infer_schema=False, quote_char=quote_char,
                       with_column_names=_repeated_columns if has_header else _numbered_columns)


def _repeated_columns(columns: list[str]) -> list[str]:
    """A header naming a column twice keeps both: the second `output` is `output_2` (polars: output_duplicated_0)."""
    import re

    out = []
    for c in columns:
        m = re.fullmatch(r"(.*)_duplicated_(\d+)", c)
        out.append(f"{m.group(1)}_{int(m.group(2)) + 2}" if m and m.group(1) in columns else c)
    return out


def _numbered_columns(columns: list[str]) -> list[str]:
    return [f"column_{i}" for i in range(1, len(columns) + 1)]


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


def _late_encoding_error(path: Path) -> DataprepError:
    from charset_normalizer import from_path

    best = best_match(from_path(path))
    guess = best.encoding.replace("_", "-") if best else "cp949"
    return DataprepError(f"{path} starts as UTF-8 but has other bytes further on; pass --encoding {guess} "
                         "(or the file's real encoding)")


def _csv_error(path: Path, source, sep: str, quote_char: str | None, exc: BaseException) -> DataprepError:
    line = _bad_csv_line(source, sep, quote_char)
    where = f" at line {line}" if line else ""
    return DataprepError(f"cannot parse {path}{where}: {first_line(exc)}; fix that line, or pass --delimiter/--encoding")


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
