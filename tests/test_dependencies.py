"""Every third-party module the package imports is declared in pyproject.toml (CI's clean machine
installs only what it lists), as a dependency or an optional extra."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
# imported only where the user has them, each behind its own check
OPTIONAL = {"triton": "dedupe's GPU kernel: ships with CUDA torch", "wandb": "train --report-to wandb"}


def _imported_modules() -> set[str]:
    names = set()
    for path in [*ROOT.glob("dataprep/**/*.py"), *ROOT.glob("training/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"dataprep", "training", "__future__"} - set(OPTIONAL)


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = [*project["dependencies"], *(s for extra in project["optional-dependencies"].values() for s in extra)]
    return {re.split(r"[<>=!~\[; ]", s, maxsplit=1)[0].lower().replace("_", "-") for s in specs}


def test_every_imported_module_is_declared():
    dists = packages_distributions()
    declared = _declared()
    missing = {m: dists.get(m) for m in _imported_modules()
               if not {d.lower().replace("_", "-") for d in dists.get(m, [m])} & declared}
    assert not missing, f"imported but not in pyproject.toml: {missing}"
