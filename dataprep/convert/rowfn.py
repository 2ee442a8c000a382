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


def row_fn_fingerprint(fn: Callable) -> dict:
    """What a convert output depends on of the row function: its name, the sha256 of its module's
    source and (under "imports", when any) those of the user's own modules it imports (see
    `row_fn_imports`). Each hash is of the source as this process loaded it (`_sha256_as_loaded`)."""
    module = _module_of(fn)
    file = getattr(module, "__file__", None)
    path = Path(file).resolve() if file else None
    name = f"{getattr(fn, '__module__', None)}:{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    config: dict = {"name": name,
                    "sha256": _sha256_as_loaded(module, path) if path and path.is_file() else None}
    if imports := row_fn_imports(fn):
        config["imports"] = imports
    return config


def row_fn_imports(fn: Callable) -> dict[str, str]:
    """{module name: sha256 of its source} of the user's own modules (not the standard library,
    installed packages or dataprep) that the row function's module imports, transitively: editing
    one of them makes a convert output out of date, as editing the function's own file does. Read
    from the loaded modules themselves (their import statements, and the modules, functions and
    classes in their globals), so a module imported earlier in the process (by another spec naming
    the same file, or by the caller's own script) counts the same as one imported just now."""
    module = _module_of(fn)
    if module is None:
        return {}
    own = _local_file(module)
    found: dict[str, tuple[ModuleType, Path]] = {}
    todo = [module]
    seen = {id(module)}
    while todo:
        for dep in _imported_modules(todo.pop()):
            if id(dep) in seen:
                continue
            seen.add(id(dep))
            if (path := _local_file(dep)) is not None:
                if path != own:
                    found[dep.__name__] = (dep, path)
                todo.append(dep)
    return {name: _sha256_as_loaded(dep, path) for name, (dep, path) in sorted(found.items())}


# (source file, id of the module's spec) → (that spec, sha256 of the file when we first saw the module)
_AS_LOADED: dict[tuple[str, int], tuple[object, str]] = {}


def _sha256_as_loaded(module: ModuleType, path: Path) -> str:
    """sha256 of `module`'s source file, which must still be the source the module was loaded from:
    a module stays cached in sys.modules, so after an edit the code that runs is the old one and a
    fingerprint of the file on disk would call an output of the old code current. The hash is
    remembered the first time we see the module (a fresh load, e.g. of a `file.py:function` spec,
    or an importlib.reload gives it a new spec, so it is seen anew); a file that differs later is an
    error."""
    from dataprep.io import sha256_path

    spec = getattr(module, "__spec__", None)
    now = sha256_path(path)
    key = (str(path), id(spec))
    loaded = _AS_LOADED.setdefault(key, (spec, now))[1]  # the spec is kept, so its id is not reused
    if now != loaded:
        raise DataprepError(f"{path} changed since this process imported it; restart the process "
                            f"(or importlib.reload it)")
    return now


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


def load_row_fn(spec: str) -> Callable[[dict], dict]:
    """`module:function` (importable from the working directory) or `path/to/file.py:function`."""
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
