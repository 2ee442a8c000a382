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


def test_split_rows_gives_parts_of_equal_area():
    from dataprep.dedupe.semantic import split_rows

    n = 10_000
    starts = split_rows(n, 4)
    area = [sum(n - i - 1 for i in range(lo, hi)) for lo, hi in zip(starts, [*starts[1:], n], strict=True)]
    assert starts[0] == 0 and len(starts) == 4 and max(area) / min(area) < 1.01
    assert all(s % 1024 == 0 for s in split_rows(n, 4, 1024))  # aligned to the kernel's launch groups
    assert split_rows(500, 4, 1024) == [0]  # too few rows to split: one part


def test_kernel_batches_stay_within_their_pair_budget_at_10m_rows():
    """The kernel's launches go in batches (the band's floor rises between them): 32 up to ~1M rows,
    beyond that enough that none covers much more than BATCH_PAIRS row pairs (one launch more at most;
    at least one launch each), in order, every launch once."""
    import numpy as np

    g = search_kernel.GROUP_ROWS

    def pairs(n, batch):
        return sum((n - s) * g for s in batch)

    for n, want in [(1_000_000, 32), (10_000_000, None)]:
        batches = search_kernel._batches(n)
        assert [s for b in batches for s in b] == list(range(0, n, g))
        if want:
            assert len(batches) == want
        else:  # 10M: 32 batches would hold ~1.6e12 pairs each
            assert len(batches) > 2_000  # equal areas, cut at launches: a batch exceeds the budget by one launch at most
            assert max(pairs(n, b) for b in batches) <= search_kernel.BATCH_PAIRS + n * g
    huge = search_kernel._batches(100_000_000)  # a launch alone is ~1e11 pairs: one a batch (the short tail ones grouped)
    assert huge[0] == [0] and len(huge) > 0.9 * len(np.arange(0, 100_000_000, g))
    part = search_kernel._batches(10_000_000, first_rows=3 * g)  # one GPU's share: its launches only
    assert [s for b in part for s in b] == [0, g, 2 * g]


def test_search_split_over_devices_equals_one_device():
    """Two (three) devices each search their rows of the upper triangle against the rows after
    them; merged, the pairs, scores, each row's nearest neighbour and the borderline list are the
    one-device answer. CPU threads stand in for GPUs."""
    import numpy as np

    rng = np.random.default_rng(3)
    n, d = 4_500, 24
    x = rng.normal(size=(n, d))
    for a, b in [(5, 4_400), (1_030, 1_031), (2_000, 4_499), (3_000, 100)]:
        x[b] = x[a] + 0.05 * rng.normal(size=d)  # near duplicates across the parts' boundaries
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    one = semantic_pairs(x, 0.8, margin=0.3)
    assert {(5, 4_400), (1_030, 1_031), (2_000, 4_499), (100, 3_000)} <= set(zip(one.a.tolist(), one.b.tolist(), strict=True))
    for devices in (["cpu", "cpu"], ["cpu", "cpu", "cpu"]):
        split = semantic_pairs(x, 0.8, margin=0.3, devices=devices)
        assert len(split.stats["part_rows"]) > 1 and sum(split.stats["part_rows"]) == n
        assert split.a.tolist() == one.a.tolist() and split.b.tolist() == one.b.tolist()  # same pairs, same order
        np.testing.assert_allclose(split.score, one.score, atol=1e-5)
        np.testing.assert_allclose(split.nearest, one.nearest, atol=1e-5)
        assert split.below[0].tolist() == one.below[0].tolist() and split.below[1].tolist() == one.below[1].tolist()
        np.testing.assert_allclose(split.below[2], one.below[2], atol=1e-5)
