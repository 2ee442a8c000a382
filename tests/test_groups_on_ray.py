"""Grouping on Ray Data (dataprep.dedupe.groups_on_ray), the fallback for edge lists beyond
DRIVER_GROUPING_MAX_PAIRS: the same components as scipy, the same Groups as the command's own
group_and_keep, and a dedupe whose bound is forced to 0 writes what the local engine writes."""

from __future__ import annotations

import numpy as np
import pytest

from dataprep.dedupe import groups_on_ray
from dataprep.dedupe.groups import components, group_and_keep
from tests.test_engine import assert_same_dedupe


def union_find(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The lowest row of each row's component, by plain union-find (the reference)."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        rx, ry = find(x), find(y)
        parent[max(rx, ry)] = min(rx, ry)
    return np.array([find(x) for x in range(n)])


def mixed_graph(seed: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Chains, a star, many small components, a random sparse part and isolated rows, on shuffled
    row ids (so a chain is not in id order), edges in random order and direction."""
    rng = np.random.default_rng(seed)
    n = 1500
    ids = rng.permutation(n)
    a, b = [], []
    for chain in (ids[:150], ids[150:200]):
        a += chain[:-1].tolist()
        b += chain[1:].tolist()
    star = ids[200:300]
    a += [star[0]] * 99
    b += star[1:].tolist()
    for i in range(300, 700, 4):  # 100 components of 4: a triangle plus a tail
        q = ids[i : i + 4]
        a += [q[0], q[1], q[2], q[0]]
        b += [q[1], q[2], q[3], q[2]]
    rand = ids[700:1300]  # 1300..1499 stay alone
    a += rng.choice(rand, 400).tolist()
    b += rng.choice(rand, 400).tolist()
    a, b = np.array(a), np.array(b)
    keep = a != b
    a, b = a[keep], b[keep]
    order = rng.permutation(len(a))
    flip = rng.random(len(a)) < 0.5
    return n, np.where(flip, b, a)[order], np.where(flip, a, b)[order]


@pytest.mark.parametrize("contract", [False, True])
def test_components_on_ray_equal_scipy_and_union_find(ray_cluster, contract):
    """Without contraction every large-star/small-star round runs (the 150-row chain needs several);
    with it, blocks of 200 edges contract their own parts first. Roots are each component's lowest row."""
    n, a, b = mixed_graph(seed=3)
    root, rounds = groups_on_ray.component_roots(n, a, b, edges_per_block=200 if contract else 1000,
                                                 contract=contract)
    assert np.array_equal(root, union_find(n, a, b))
    assert np.array_equal(np.unique(root, return_inverse=True)[1].reshape(-1), components(n, a, b))  # scipy's labels
    alone = np.setdiff1d(np.arange(n), np.concatenate([a, b]))
    assert len(alone) >= 200 and np.array_equal(root[alone], alone)  # rows without a pair are their own component
    assert rounds >= (3 if not contract else 1)


def test_components_on_ray_without_edges(ray_cluster):
    root, rounds = groups_on_ray.component_roots(4, np.empty(0, np.int64), np.empty(0, np.int64))
    assert root.tolist() == [0, 1, 2, 3] and rounds == 0


@pytest.mark.parametrize("keep", ["centroid", "longest", "random"])
def test_group_and_keep_on_ray_equals_the_drivers(ray_cluster, keep):
    """Chained pairs with float32 scores and pinned rows: the same labels, keepers and scores as
    groups.group_and_keep, for a key summed per partition (centroid) and keys from the command."""
    n, a, b = mixed_graph(seed=7)
    code = np.unique(np.minimum(a, b) * n + np.maximum(a, b))
    a, b = code // n, code % n
    rng = np.random.default_rng(1)
    score = rng.uniform(0.5, 1, len(a)).astype(np.float32)
    lengths = rng.integers(1, 20, n).tolist()  # many ties: the row id breaks them
    pinned = np.zeros(n, dtype=bool)
    pinned[rng.choice(n, 60, replace=False)] = True
    opts = dict(keep=keep, lengths=lengths, seed=5, pinned=pinned)
    local = group_and_keep(n, a, b, score, **opts)
    ray = groups_on_ray.group_and_keep_on_ray(n, a, b, score, edges_per_block=300, **opts)
    assert len(local.removed) > 100 and local.kept_in_groups() > len(local.sizes())  # chains keep several rows
    assert np.array_equal(ray.labels, local.labels)
    assert np.array_equal(ray.keeper, local.keeper)
    assert ray.score.dtype == local.score.dtype and np.array_equal(ray.score, local.score)


def test_dedupe_grouped_on_ray_beyond_the_bound_equals_local(ray_cluster, shared_data, tmp_path, monkeypatch):
    """The bound forced to 0 pairs: near's pairs (english_to_latex.csv at 0.5, which chain) are grouped
    on Ray Data, and records, removed rows, kept_ids, scores, pairs and report equal local's byte for byte."""
    from dataprep.convert import convert
    from dataprep.dedupe import dedupe

    convert([str(shared_data / "english_to_latex.csv")], str(tmp_path / "latex"), template="latex")
    opts = dict(methods=("exact", "near"), keep="centroid", near_threshold=0.5)
    local = dedupe(tmp_path / "latex", tmp_path / "local", **opts)
    monkeypatch.setattr(groups_on_ray, "DRIVER_GROUPING_MAX_PAIRS", 0)
    ray = dedupe(tmp_path / "latex", tmp_path / "ray", engine="ray", **opts)
    assert local.counts.by_reason == {"exact": 1, "near": 11} and ray.counts == local.counts
    assert "group on ray" in ray.timings and "group on ray" not in local.timings
    assert_same_dedupe(tmp_path / "local", tmp_path / "ray")
