"""benchmarks/hardening_cases.py (issue #12's before/after table) classifies as it says: three cases
pass on this checkout, and a checkout whose CLI prints a traceback is caught."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

HARNESS = REPO / "benchmarks" / "hardening_cases.py"
CASES = ["lone surrogate \\ud800 in output (JSONL)", "convert --batch-rows '0'", "-o is a file"]


def run(repo, tmp_path):
    args = [sys.executable, str(HARNESS), "--repo", str(repo), "--json", str(tmp_path / "r.json")]
    for name in CASES:
        args += ["--match", name]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return {r["case"]: r for r in json.loads((tmp_path / "r.json").read_text())["results"]}


def test_three_cases_pass_on_this_checkout(tmp_path):
    results = run(REPO, tmp_path)
    assert set(results) == set(CASES)
    assert {name: (r["status"], r["problems"]) for name, r in results.items()} == {name: ("ran", {}) for name in CASES}


def test_a_checkout_that_prints_a_traceback_is_caught(tmp_path):
    fake = tmp_path / "fake"
    (fake / "dataprep").mkdir(parents=True)
    (fake / "dataprep" / "__init__.py").write_text("")
    (fake / "dataprep" / "__main__.py").write_text(
        "import sys\nif '--help' in sys.argv:\n    print('Options: -o, --out --batch-rows')\n    sys.exit(0)\n"
        "open(sys.argv[sys.argv.index('-o') + 1] + '.partial', 'w')\nraise RuntimeError('boom')\n")
    results = run(fake, tmp_path)
    surrogate, batch_rows, o_file = (results[name] for name in CASES)
    assert set(surrogate["problems"]) == {"traceback", "wrong_exit"}  # a good input must succeed
    assert set(o_file["problems"]) == {"traceback", "no_error_line", "left_behind"}
    assert o_file["problems"]["left_behind"] == ["taken.partial"]
    assert set(batch_rows["problems"]) == {"traceback", "no_error_line", "left_behind"}
