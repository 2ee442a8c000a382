"""The fused Triton search kernel against brute force (CPU: Triton's interpreter) and the torch path (GPU).

Skipped where triton is absent (CI); on a machine without a GPU run under the interpreter:
    TRITON_INTERPRET=1 PYTHONPATH=/tmp/triton_site:. python -m pytest tests/dedupe/test_search_kernel.py
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("triton")
torch = pytest.importorskip("torch")
CUDA = torch.cuda.is_available()
if not CUDA and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU: set TRITON_INTERPRET=1 to run the kernel in Triton's interpreter", allow_module_level=True)

if not CUDA:  # triton 3.5's interpreter reads a loop bound with int(1-element array), refused by numpy >= 2.4
    from triton.runtime import interpreter

    _patch_tensor = interpreter._patch_lang_tensor

    def _patch_with_item(tensor):
        _patch_tensor(tensor)
        tensor.__index__ = lambda self: int(self.handle.data.reshape(-1)[0])

    interpreter._patch_lang_tensor = _patch_with_item

from dataprep.dedupe import search_kernel  # noqa: E402
from dataprep.dedupe.semantic import semantic_pairs  # noqa: E402
from tests.dedupe.test_dedupe import brute_pairs, planted_vectors  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"


def kernel_search(x, threshold, **kw):
    return search_kernel.kernel_pairs(torch.as_tensor(x, device=DEVICE), threshold, **kw)


@pytest.fixture
def small_groups(monkeypatch):
    """Several launches (row groups) and batches even at 400 rows."""
    monkeypatch.setattr(search_kernel, "GROUP_ROWS", 64 if not CUDA else 256)


INTERPRETED = search_kernel.INTERPRET_CONFIG  # 3 programs walking the tiles, pointer loads
CONFIGS = [INTERPRETED, INTERPRETED[:6] + (True,), INTERPRETED[:5] + (0, False)]  # + TMA loads; + a tile each


@pytest.mark.parametrize(("d", "margin", "config"), [
    (16, 0.1, CONFIGS[0]), (40, 0.5, CONFIGS[0]), (64, 0.5, CONFIGS[0]),  # 16, 40: a masked K step
    (64, 0.5, CONFIGS[1]), (40, 0.5, CONFIGS[1]), (40, 0.5, CONFIGS[2]),  # d=40 falls back from TMA to pointers
])
def test_kernel_equals_brute_force(small_groups, d, margin, config):
    x = planted_vectors(d=d)
    expected, sims = brute_pairs(x, 0.8)
    a, b, score, nearest, (ba, bb, bs), stats = kernel_search(x, 0.8, margin=margin,
                                                              config=None if CUDA else config)
    assert stats["search_path"] == "triton" and stats["pair_reruns"] == 0
    assert list(zip(a.tolist(), b.tolist(), strict=True)) == sorted(expected)  # sorted by (a, b), as the torch path
    assert {(10, 50), (10, 51), (50, 51), (0, 399)} <= expected
    np.testing.assert_allclose(score, sims[a, b], atol=1e-5)
    np.fill_diagonal(sims, -2)
    np.testing.assert_allclose(nearest, sims.max(axis=1), atol=1e-5)
    in_band = np.sort(sims[np.triu((sims < 0.8) & (sims >= 0.8 - margin), k=1)])[::-1]
    assert 0 < len(bs) == min(50, len(in_band)) and (bs[:-1] >= bs[1:]).all()
    np.testing.assert_allclose(bs, in_band[: len(bs)], atol=1e-5)  # the highest ones below the threshold
    np.testing.assert_allclose(bs, sims[ba, bb], atol=1e-5)
    assert (ba < bb).all()


def test_full_buffers_grow_or_rerun_and_give_the_same_answer(small_groups):
    x = planted_vectors(d=16)
    # a low threshold: hundreds of pairs into a 2-slot buffer; a wide band into a 12-slot buffer
    expected, sims = brute_pairs(x, 0.5)
    a, b, _, _, (ba, bb, bs), stats = kernel_search(x, 0.5, margin=0.4, borderline=3, pair_capacity=2,
                                                   band_capacity=4)
    assert stats["pair_reruns"] >= 1 and stats["band_passes"] >= 2 and stats["band_exact"]
    assert len(expected) > 100 and list(zip(a.tolist(), b.tolist(), strict=True)) == sorted(expected)
    in_band = np.sort(sims[np.triu((sims < 0.5) & (sims >= 0.1), k=1)])[::-1]
    np.testing.assert_allclose(bs, in_band[:3], atol=1e-5)
    np.testing.assert_allclose(bs, sims[ba, bb], atol=1e-5)


def test_batching_of_the_launches_does_not_change_the_answer(small_groups, monkeypatch):
    """The band's floor rises between batches of launches: each launch its own batch, the default
    batches, or all launches in one batch give the same pairs, scores, nearest neighbours,
    borderline list and band passes."""
    x = planted_vectors(d=16)
    launches = len(range(0, len(x), search_kernel.GROUP_ROWS))
    config = None if CUDA else INTERPRETED
    default = kernel_search(x, 0.8, margin=0.5, config=config)
    runs = {}
    for name, batch_pairs, min_batches in [("one launch each", 1, 1), ("one batch", 1 << 62, 1)]:
        monkeypatch.setattr(search_kernel, "BATCH_PAIRS", batch_pairs)
        monkeypatch.setattr(search_kernel, "MIN_BATCHES", min_batches)
        runs[name] = search_kernel._batches(len(x)), kernel_search(x, 0.8, margin=0.5, config=config)
    assert launches > 1 and [len(b) for b in runs["one launch each"][0]] == [1] * launches
    assert [len(b) for b in runs["one batch"][0]] == [launches]
    a, b, s, nearest, below, stats = default
    assert len(a) > 3 and len(below[0]) == 50
    for _, (other_a, other_b, other_s, other_nearest, other_below, other_stats) in runs.values():
        assert other_a.tolist() == a.tolist() and other_b.tolist() == b.tolist() and other_s.tolist() == s.tolist()
        assert other_nearest.tolist() == nearest.tolist()
        assert sorted(zip(*(v.tolist() for v in other_below), strict=True)) == sorted(zip(*(v.tolist() for v in below), strict=True))
        assert other_stats["band_passes"] == stats["band_passes"] and other_stats["pair_reruns"] == stats["pair_reruns"]


def test_one_row_and_no_pairs():
    a, b, _, nearest, below, _ = kernel_search(planted_vectors()[:1], 0.8)
    assert len(a) == len(b) == len(below[0]) == 0 and nearest.tolist() == [-1.0]


def test_semantic_pairs_runs_the_kernel_when_asked_and_torch_when_told_not_to():
    x = planted_vectors(d=16)
    fused = semantic_pairs(x, 0.8, device=DEVICE, kernel=True)
    blocks = semantic_pairs(x, 0.8, device=DEVICE, kernel=False)
    assert fused.stats["search_path"] == "triton" and blocks.stats["search_path"] == "torch"
    assert fused.a.tolist() == blocks.a.tolist() and fused.b.tolist() == blocks.b.tolist()
    assert fused.stats["pairs"] == blocks.stats["pairs"] == len(blocks.a)
    if CUDA:  # the default on a GPU is the kernel
        assert semantic_pairs(x, 0.8, device="cuda").stats["search_path"] == "triton"


@pytest.mark.skipif(not CUDA, reason="moderate n needs a GPU")
def test_kernel_matches_torch_path_at_20k_rows_fp16():
    rng = np.random.default_rng(1)
    n, d, thr = 20_000, 384, 0.85
    x = rng.normal(size=(n, d)).astype(np.float32)
    src = rng.choice(n, 500, replace=False)  # 500 planted near-duplicates at cosines spread across 0.75..0.95
    dst = rng.choice(np.setdiff1d(np.arange(n), src), 500, replace=False)
    x[dst] = x[src] + rng.uniform(0.3, 0.9, size=(500, 1)) * rng.normal(size=(500, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    fused = semantic_pairs(x, thr, device="cuda")
    blocks = semantic_pairs(x, thr, device="cuda", kernel=False)
    assert fused.stats["search_path"] == "triton" and len(fused.a) > 200
    exact = np.einsum("ij,ij->i", x[fused.a], x[fused.b])
    np.testing.assert_allclose(fused.score, exact, atol=2e-3)
    ours = set(zip(fused.a.tolist(), fused.b.tolist(), strict=True))
    theirs = set(zip(blocks.a.tolist(), blocks.b.tolist(), strict=True))
    differ = np.array(sorted(ours ^ theirs)).reshape(-1, 2)
    assert (np.abs(np.einsum("ij,ij->i", x[differ[:, 0]], x[differ[:, 1]]) - thr) < 5e-3).all()
    np.testing.assert_allclose(fused.nearest, blocks.nearest, atol=2e-3)
    np.testing.assert_allclose(fused.below[2], blocks.below[2], atol=2e-3)
    assert len(fused.below[2]) == 50


def test_kernel_split_over_devices_equals_one_launch_sequence(small_groups):
    """Each device's share is the kernel on the rows from its first on, cut at its last
    (`first_rows`); merged they give the one-device answer."""
    x = planted_vectors(d=16)
    one = semantic_pairs(x, 0.8, device=DEVICE, kernel=True)
    split = semantic_pairs(x, 0.8, devices=[DEVICE] * 3, kernel=True)
    assert split.stats["search_path"] == "triton" and len(split.stats["part_rows"]) == 3
    assert all(r % search_kernel.GROUP_ROWS == 0 for r in split.stats["part_rows"][:-1])
    assert split.a.tolist() == one.a.tolist() and split.b.tolist() == one.b.tolist()
    np.testing.assert_allclose(split.nearest, one.nearest, atol=1e-5)
    np.testing.assert_allclose(split.below[2], one.below[2], atol=1e-5)
