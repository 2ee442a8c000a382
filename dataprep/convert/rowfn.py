"""`--row-fn module:function`: a user function from a raw row dict to canonical fields; its
exceptions and bad results become rejects of that row.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from dataprep.convert.columns import PROVENANCE
from dataprep.errors import DataprepError
from dataprep.records import get_kind
from dataprep.sources import frame_from_rows

_LOCAL_IMPORTS: dict[str, set[str]] = {}  # row-fn spec -> the user's modules its import loaded (by name)


def load_row_fn(spec: str) -> Callable[[dict], dict]:
    """`module:function` (importable from the working directory) or `path/to/file.py:function`.
    The user's own modules that importing it loads (not the standard library, installed packages
    or the function's own module) are noted, so that `row_fn_imports` can fingerprint them too."""
    before = set(sys.modules)
    fn = _load_row_fn(spec)
    own = spec.rpartition(":")[0]
    _LOCAL_IMPORTS.setdefault(spec, set()).update(n for n in set(sys.modules) - before if n != own and _local_file(n))
    return fn


def row_fn_imports(spec: str) -> dict[str, str]:
    """{module name: sha256 of its source} of the user's modules the row function's import loaded
    (noted at its first load in this process): editing one of them makes a convert output out of
    date, as editing the function's own file does."""
    from dataprep.io import sha256_path

    return {name: sha256_path(path) for name in sorted(_LOCAL_IMPORTS.get(spec, ())) if (path := _local_file(name))}


def _local_file(name: str) -> Path | None:
    """The source file of module `name` when it is the user's own (not the standard library, an
    installed package or dataprep)."""
    import sysconfig

    file = getattr(sys.modules.get(name), "__file__", None)
    if not file or not Path(file).is_file():
        return None
    path = Path(file).resolve()
    installed = {Path(p).resolve() for key in ("stdlib", "platstdlib", "purelib", "platlib")
                 if (p := sysconfig.get_paths().get(key))} | {Path(__file__).resolve().parents[1]}
    return None if any(root in path.parents for root in installed) else path


def _load_row_fn(spec: str) -> Callable[[dict], dict]:
    module_name, _, func_name = spec.rpartition(":")
    if not module_name or not func_name:
        raise DataprepError(f"--row-fn {spec}: write it as module:function or path/to/file.py:function")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise DataprepError(f"--row-fn {spec}: file {module_name} does not exist; check the path")
            loader_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(module_name)
    except DataprepError:
        raise
    except Exception as exc:  # the user's module failed to import
        raise DataprepError(f"--row-fn {spec}: cannot import {module_name}: {exc}; check the module") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise DataprepError(f"--row-fn {spec}: {module_name} has no function {func_name}; check the name")
    return fn


def row_fn_file(spec: str) -> str | None:
    """The source file of a row function (its hash goes into the fingerprint), if it can be found."""
    module_name = spec.rpartition(":")[0]
    if module_name.endswith(".py"):
        return module_name
    found = importlib.util.find_spec(module_name)
    return found.origin if found and found.origin and Path(found.origin).is_file() else None


def apply_row_fn(frame, fn: Callable[[dict], dict], kind: str, batch_size: int = 1000):
    """Call `fn` on every row, in batches; exceptions and bad results become rejects.

    Returns (frame of the canonical fields fn returned + source/row, rejects).
    """
    import polars as pl
    from tqdm import tqdm

    entry = get_kind(kind)
    required, optional = entry.fields, entry.optional
    fields = set(required + optional)
    out, provenance, rejects = [], [], []
    inputs = [c for c in frame.columns if c not in PROVENANCE]
    with tqdm(total=frame.height, desc="row-fn", unit="row", disable=None, leave=False) as bar:
        for batch in frame.iter_slices(batch_size):
            for row in batch.iter_rows(named=True):
                reason, detail = None, None
                try:
                    rec = fn({c: row[c] for c in inputs})
                except (Exception, SystemExit) as exc:  # the user's code: any failure (sys.exit too) is this row's
                    # reject, counted by exception type; the message goes in the detail
                    reason, detail = f"row-fn error: {type(exc).__name__}", (str(exc) or None)
                    detail = detail[:200] if detail else None
                else:
                    if not isinstance(rec, dict):
                        reason = f"bad row-fn result: {type(rec).__name__}, not a dict"
                    elif set(rec) - fields:
                        reason = f"bad row-fn result: unknown field {sorted(set(rec) - fields)[0]}"
                if reason:
                    rejects.append({"source": row["source"], "row": row["row"], "reason": reason, "detail": detail})
                else:
                    out.append(rec)
                    provenance.append((row["source"], row["row"]))
            bar.update(batch.height)
    result = frame_from_rows(out, "row-fn output")
    result = result.with_columns(
        [pl.lit(None, dtype=pl.String).alias(f) for f in required if f not in result.columns]
        + [pl.Series("source", [p[0] for p in provenance], dtype=pl.String),
           pl.Series("row", [p[1] for p in provenance], dtype=pl.Int64)]
    )
    return result, rejects
