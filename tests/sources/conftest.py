"""Shared inputs of the reader tests: the small asset files, and two Alpaca rows to write in each format."""

from __future__ import annotations

from tests.conftest import REPO

ASSETS = REPO / "tests" / "assets"
ROWS = [{"instruction": "Add 1 and 1", "input": "", "output": "2"}, {"instruction": "Spell cat", "input": "", "output": "c-a-t"}]
