"""`--row-fn module:function`: a user function from a raw row dict to canonical fields; its
exceptions and bad results become rejects of that row.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import FunctionType, ModuleType

from dataprep.convert.columns import PROVENANCE
from dataprep.errors import DataprepError
from dataprep.records import get_kind
from dataprep.sources import frame_from_rows


def load_row_fn(spec: str) -> Callable[[dict], dict]:
    """`module:function` (importable from the working directory) or `path/to/file.py:function`."""
    return _load_row_fn(spec)


def row_fn_imports(fn: Callable) -> dict[str, str]:
    """{module name: sha256 of its source} of the user's own modules (not the standard library,
    installed packages or dataprep) that the row function's module imports, transitively: editing
    one of them makes a convert output out of date, as editing the function's own file does. Read
    from the loaded modules themselves (their import statements, and the modules, functions and
    classes in their globals), so a module imported earlier in the process (by another spec naming
    the same file, or by the caller's own script) counts the same as one imported just now."""
    from dataprep.io import sha256_path

    module = _module_of(fn)
    if module is None:
        return {}
    own = _local_file(module)
    found: dict[str, Path] = {}
    todo = [module]
    seen = {id(module)}
    while todo:
        for dep in _imported_modules(todo.pop()):
            if id(dep) in seen:
                continue
            seen.add(id(dep))
            if (path := _local_file(dep)) is not None:
                if path != own:
                    found[dep.__name__] = path
                todo.append(dep)
    return {name: sha256_path(path) for name, path in sorted(found.items())}


def _module_of(fn: Callable) -> ModuleType | None:
    """The module a row function was defined in: the one whose globals it reads (a module loaded
    from a file path is not in sys.modules), else its `__module__`."""
    fn = getattr(fn, "__func__", fn)  # a bound method
    namespace = getattr(fn, "__globals__", None)
    if namespace is not None:
        name = namespace.get("__name__")
        module = sys.modules.get(name)
        if module is not None and module.__dict__ is namespace:
            return module
        module = ModuleType(name or "row_fn")  # a stand-in over the same namespace
        module.__dict__.update(namespace)
        return module
    return sys.modules.get(getattr(fn, "__module__", None) or "")


def _imported_modules(module: ModuleType):
    """The modules `module` imports (its import statements, top-level or inside functions, that
    have been imported) and those its globals' modules, functions and classes come from."""
    import ast
    import importlib.util

    names: set[str] = set()
    file = getattr(module, "__file__", None)
    try:
        tree = ast.parse(Path(file).read_bytes()) if file else None
    except (OSError, SyntaxError, ValueError):
        tree = None
    package = getattr(module, "__package__", None) or ""
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            try:
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level \
                    else node.module
            except (ImportError, ValueError):
                continue
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    for value in list(vars(module).values()):
        if isinstance(value, ModuleType):
            yield value
        elif isinstance(value, (type, FunctionType)):
            names.add(getattr(value, "__module__", None) or "")
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # `import a.b.c` loads a and a.b too
            if (dep := sys.modules.get(".".join(parts[:i]))) is not None:
                yield dep


def _local_file(module: ModuleType) -> Path | None:
    """The source file of `module` when it is the user's own (not the standard library, an
    installed package or dataprep)."""
    file = getattr(module, "__file__", None)
    if not file or not Path(file).is_file():
        return None
    path = Path(file).resolve()
    return None if any(root in path.parents for root in _installed_roots()) else path


@functools.cache
def _installed_roots() -> frozenset[Path]:
    """The standard library's, installed packages' and dataprep's own folders."""
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    roots = [paths.get(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")]
    roots += [*site.getsitepackages(), site.getusersitepackages()] if hasattr(site, "getsitepackages") else []
    return frozenset({Path(p).resolve() for p in roots if p} | {Path(__file__).resolve().parents[1]})


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
