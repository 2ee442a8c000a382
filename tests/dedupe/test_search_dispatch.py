"""Which search `semantic_pairs` runs: runs everywhere (no triton, no GPU needed)."""

from __future__ import annotations

import pytest

from dataprep.dedupe import search_kernel
from dataprep.dedupe.semantic import semantic_pairs
from tests.dedupe.test_dedupe import brute_pairs, planted_vectors


def test_a_gpu_where_no_kernel_config_runs_falls_back_to_torch_and_says_why(monkeypatch):
    def no_config(*args):
        raise search_kernel.KernelUnavailable("no configuration of the search kernel ran on this GPU: test")

    monkeypatch.setattr(search_kernel, "available", lambda device: True)
    monkeypatch.setattr(search_kernel, "_pick_config", no_config)
    x = planted_vectors()
    res = semantic_pairs(x, 0.8)
    assert res.stats["search_path"] == "torch" and "no configuration" in res.stats["kernel_unavailable"]
    assert set(zip(res.a.tolist(), res.b.tolist(), strict=True)) == brute_pairs(x, 0.8)[0]
    with pytest.raises(search_kernel.KernelUnavailable):  # asked for the kernel: no silent fallback
        semantic_pairs(x, 0.8, kernel=True)


def test_cpu_runs_the_torch_blocks():
    assert semantic_pairs(planted_vectors(), 0.8).stats["search_path"] == "torch"
