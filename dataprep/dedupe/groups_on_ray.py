"""Grouping on Ray Data (`--engine ray`) for edge lists too big to group on the command's machine:
the same labels, kept rows, `kept_id`s and scores as groups.group_and_keep.

Grouping on the command's machine (groups.group_and_keep: scipy's connected components, then the
leader loop over a sorted adjacency) peaks at 180–230 bytes per pair (tracemalloc: 2M pairs over
2M rows, and benchmarks/bench_grouping.py; per-row arrays included), on top of the pairs themselves.
So it runs there up to DRIVER_GROUPING_MAX_PAIRS pairs (~3.6–4.7 GB of working memory); beyond
that, on the cluster (the pairs still come back to the command, which writes pairs.parquet):

1. **Connected components** by large-star / small-star iterations (Kiveris et al., "Connected
   Components in MapReduce and Beyond", SoCC 2014). Each edge block is first contracted on its own
   (its local components become stars on their lowest row: fewer edges, the same components).
   Then each round shuffles the edges' incidences by node and, per node u with neighbours N(u):
   - large-star links every neighbour v > u to m = min(N(u) + u);
   - small-star links u and its neighbours v < u to m = min of those.
   The rounds stop when every component is a star on its lowest row (checked exactly in the
   large-star step: each node has only larger neighbours, or one smaller neighbour). Only the
   (row, root) list, at most one entry per row, comes back to the command.
2. **The leader rule per component**: the pairs are shuffled by their component, and each
   partition runs groups.leaders on its whole components. A leader removes only its own pair
   partners, which are in its component, so components are independent and the answer is the
   one the command would compute: the order within a component is the policy's (pinned rows,
   key, row id), and `centroid` without embeddings sums each row's pair scores in the same order.

Each shuffle groups by a partition column (node or component modulo the partition count), so a
step sees whole partitions and works on them with numpy, never one Python call per node.
"""

from __future__ import annotations

import logging

import numpy as np

from dataprep.dedupe.groups import KEEP_POLICIES, Groups, _rank, components, leaders

log = logging.getLogger(__name__)

DRIVER_GROUPING_MAX_PAIRS = 20_000_000  # 180-230 B per pair of working memory on the command's machine: ~4 GB
EDGES_PER_BLOCK = 1_000_000  # edges a task contracts or a partition holds, at most about
MAX_ROUNDS = 100  # large-star/small-star converges in O(log² n) rounds; far more means a bug


def _parts(ray, edges: int, per_part: int = EDGES_PER_BLOCK) -> int:
    """Shuffle partitions for `edges` edges: one per `per_part`, at least one per CPU."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)), -(-edges // per_part))


def _edges_dataset(ray, columns: dict[str, np.ndarray], per_block: int):
    import pyarrow as pa

    total = len(next(iter(columns.values())))
    blocks = [pa.table({k: v[i : i + per_block] for k, v in columns.items()}) for i in range(0, total, per_block)]
    return ray.data.from_arrow(blocks)


def _incidences(x: np.ndarray, y: np.ndarray, parts: int) -> dict[str, np.ndarray]:
    """Both incidences of each edge (x, y), keyed by their node's partition."""
    u, v = np.concatenate([x, y]), np.concatenate([y, x])
    return {"u": u, "v": v, "part": u % parts}


def _by_node(u: np.ndarray, v: np.ndarray):
    """(nodes, starts, counts, u, v) with the incidences sorted by node, each once (an edge may come
    from two partitions of the previous step)."""
    o = np.lexsort((v, u))
    u, v = u[o], v[o]
    once = np.r_[True, (u[1:] != u[:-1]) | (v[1:] != v[:-1])] if len(u) else np.empty(0, bool)
    u, v = u[once], v[once]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]]) if len(u) else np.empty(0, np.int64)
    return u[starts], starts, np.diff(np.r_[starts, len(u)]), u, v


def _contract(parts: int):
    """An edge block's own components, each as a star on its lowest node (the same components overall)."""

    def contract(block):
        a, b = block["a"], block["b"]
        nodes = np.unique(np.concatenate([a, b]))
        labels = components(len(nodes), np.searchsorted(nodes, a), np.searchsorted(nodes, b))
        low = np.full(labels.max() + 1 if len(labels) else 0, np.iinfo(np.int64).max)
        np.minimum.at(low, labels, nodes)
        root = low[labels]
        leaf = nodes != root
        return _incidences(nodes[leaf], root[leaf], parts)

    return contract


def _large_star(parts: int):
    """Per node u: every neighbour v > u is linked to min(N(u) + u). Emits small-star's incidences
    (at each edge's larger end) and one row (u=-1, v=count) with the nodes that are neither a star's
    centre (only larger neighbours) nor its leaf (one smaller neighbour)."""

    def large_star(group):
        nodes, starts, counts, u, v = _by_node(group["u"], group["v"])
        low = np.minimum(nodes, np.minimum.reduceat(v, starts)) if len(nodes) else nodes
        not_star = int((~((low == nodes) | ((counts == 1) & (low < nodes)))).sum())
        m = np.repeat(low, counts)
        out = v > u
        x, y = np.r_[v[out], -1], np.r_[m[out], not_star]
        return {"u": x, "v": y, "part": np.where(x >= 0, x, 0) % parts}

    return large_star


def _small_star(parts: int, n: int):
    """Per node u with its smaller neighbours: u and each of them are linked to the least of them.
    Emits large-star's incidences of the new edges (each edge once)."""

    def small_star(group):
        real = group["u"] >= 0  # not large-star's count rows
        nodes, starts, counts, u, v = _by_node(group["u"][real], group["v"][real])
        if not len(nodes):
            return _incidences(nodes, nodes, parts)
        low = np.minimum.reduceat(v, starts)  # every v < u here
        m = np.repeat(low, counts)
        x, y = np.concatenate([v[v != m], nodes]), np.concatenate([m[v != m], low])
        code = np.unique(x * n + y)
        return _incidences(code // n, code % n, parts)

    return small_star


def _not_star(ds) -> int:
    counts = ds.map_batches(lambda b: {"c": b["v"][b["u"] < 0]}, batch_format="numpy", batch_size=None)
    return int(counts.sum("c") or 0)


def component_roots(n: int, a: np.ndarray, b: np.ndarray, *, edges_per_block: int = EDGES_PER_BLOCK,
                    contract: bool = True) -> tuple[np.ndarray, int]:
    """(the lowest row of each row's component, rounds) for n rows and the edges (a[k], b[k]), on Ray Data.

    `edges_per_block`: edges per task and per shuffle partition (tests make it small);
    `contract=False` skips the per-block contraction (tests: every round is then exercised).
    """
    from dataprep.engine import cluster, sort_shuffle

    root = np.arange(n, dtype=np.int64)
    if not len(a):
        return root, 0
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    with cluster() as ray, sort_shuffle():
        parts = _parts(ray, 2 * len(a), edges_per_block)
        edges = _edges_dataset(ray, {"a": a, "b": b}, edges_per_block)
        if contract:
            inc = edges.map_batches(_contract(parts), batch_format="numpy", batch_size=None)
        else:
            inc = edges.map_batches(lambda e: _incidences(e["a"], e["b"], parts), batch_format="numpy", batch_size=None)
        rounds = 0
        while True:
            rounds += 1
            stars = inc.groupby("part", num_partitions=parts).map_groups(_large_star(parts), batch_format="numpy")
            stars = stars.materialize()
            if not _not_star(stars):
                break
            if rounds == MAX_ROUNDS:
                raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")
            inc = stars.groupby("part", num_partitions=parts).map_groups(_small_star(parts, n), batch_format="numpy")
        for batch in stars.iter_batches(batch_size=None, batch_format="numpy"):
            leaf = batch["u"] >= 0
            root[batch["u"][leaf]] = batch["v"][leaf]
    log.debug("components: %d rounds over %d edges", rounds, len(a))
    return root, rounds


def _leaders_per_component(parts: int, root_ref, key_ref, pinned_ref, summed_key: bool):
    """The leader rule on a partition of whole components (see the module doc)."""

    def lead(group):
        import ray

        root, pinned = ray.get(root_ref), ray.get(pinned_ref)
        o = np.argsort(group["k"], kind="stable")  # the pairs' input order: the same sums as the command's
        a, b, s = group["a"][o], group["b"][o], group["s"][o]
        nodes = np.unique(np.concatenate([a, b]))
        la, lb = np.searchsorted(nodes, a), np.searchsorted(nodes, b)
        if summed_key:  # centroid without embeddings: _rank's summed pair score, on this partition's pairs
            summed = np.zeros(len(nodes))
            np.add.at(summed, la, s)
            np.add.at(summed, lb, s)
            key = -np.round(summed, 6)
        else:
            key = ray.get(key_ref)[nodes]
        pin = pinned[nodes]
        order = np.lexsort((nodes, key, ~pin, root[nodes]))  # by component, pinned first, key, row id
        keeper, best = leaders(len(nodes), order, la, lb, s, pin)
        return {"id": nodes, "keeper": nodes[keeper], "best": best}

    return lead


def group_and_keep_on_ray(n: int, a: np.ndarray, b: np.ndarray, score: np.ndarray | None = None, *,
                          keep: str = "first", lengths=None, seed: int = 0, embeddings=None,
                          pinned: np.ndarray | None = None, edges_per_block: int = EDGES_PER_BLOCK) -> Groups:
    """groups.group_and_keep (not transitive) with the components and the leader rule on Ray Data."""
    from dataprep.engine import cluster, sort_shuffle

    if keep not in KEEP_POLICIES:
        raise ValueError(f"unknown keep policy {keep!r}; choose one of {', '.join(KEEP_POLICIES)}")
    if keep in ("longest", "shortest") and lengths is None:
        raise ValueError(f"keep={keep!r} needs the text lengths")
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    score = np.ones(len(a)) if score is None else np.asarray(score)
    pinned = np.zeros(n, dtype=bool) if pinned is None else np.asarray(pinned, dtype=bool)
    root, _ = component_roots(n, a, b, edges_per_block=edges_per_block)
    labels = np.unique(root, return_inverse=True)[1].reshape(-1) if n else root  # numbered by lowest row, as scipy
    summed_key = keep == "centroid" and embeddings is None
    key = np.zeros(0) if summed_key else _rank(keep, n, None, None, None, lengths, seed, embeddings, labels)
    keeper, best = np.arange(n), np.ones(n, dtype=np.float32)
    if len(a):
        with cluster() as ray, sort_shuffle():
            parts = _parts(ray, len(a), edges_per_block)
            root_ref = ray.put(root)
            step = _leaders_per_component(parts, root_ref, ray.put(key), ray.put(pinned), summed_key)
            edges = _edges_dataset(ray, {"a": a, "b": b, "s": score, "k": np.arange(len(a))}, edges_per_block)

            def by_component(e):
                return {**e, "part": ray.get(root_ref)[e["a"]] % parts}

            edges = edges.map_batches(by_component, batch_format="numpy", batch_size=None)
            done = edges.groupby("part", num_partitions=parts).map_groups(step, batch_format="numpy")
            for batch in done.iter_batches(batch_size=None, batch_format="numpy"):
                keeper[batch["id"]], best[batch["id"]] = batch["keeper"], batch["best"]
    return Groups(labels, keeper, best)
