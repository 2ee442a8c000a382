"""Duplicate groups, the keep policy, and which rows are removed.

Groups are the connected components of the graph of found pairs (each pair was scored
directly: exact equality, true Jaccard, or cosine, at or above the method's threshold). They
are reported whole, but removal never rests on a chain of pairs: A~B and B~C put A, B, C in one
group even when A and C are not a pair, and then only B may go for A; C stays unless it is
itself a pair with a row that stays.

Within a group the rows are taken in the keep policy's order; a row that is not yet removed
stays (it leads), and removes every pair partner not yet decided (clustering by leaders). So every
removed row's `kept_id` is a row that stays, the score is their own pair's score (never below
the threshold), and no two rows that stay form a found pair. The policy is the order:
- `first`: input order;
- `longest` / `shortest`: by text length in characters, ties broken by input order;
- `random`: a seeded random order (the same seed gives the same choice);
- `centroid`: nearest the group's mean embedding first (ties by input order); without
  embeddings (exact and near groups) the member with the highest summed pair score first.
Exact duplicates are equal texts, a relation that is transitive: there every group is one
cluster and keeps exactly one row (`transitive=True`).

`pinned` rows stay whatever the policy: the rows an earlier method kept for the rows it removed
(methods run in turn). They lead their group first, so a later method never removes the row a
`kept_id` points to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEEP_POLICIES = ("first", "longest", "shortest", "random", "centroid")


@dataclass
class Groups:
    labels: np.ndarray  # component id of each row
    keeper: np.ndarray  # for each row, the row that stays for it (itself for rows that stay)
    score: np.ndarray  # for each removed row, the score of its pair with its keeper (1.0 for rows that stay)

    @property
    def removed(self) -> np.ndarray:
        return np.flatnonzero(self.keeper != np.arange(len(self.keeper)))

    def sizes(self) -> np.ndarray:
        """Size of every group with more than one row."""
        counts = np.bincount(self.labels)
        return counts[counts > 1]

    def kept_in_groups(self) -> int:
        """Rows of groups with more than one row that stay (one per group only when nothing chains)."""
        if not len(self.labels):
            return 0
        multi = np.bincount(self.labels)[self.labels] > 1
        return int((multi & (self.keeper == np.arange(len(self.keeper)))).sum())


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component label of each of n rows, given edges (a[k], b[k])."""
    try:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components
    except ImportError:  # a minimal GPU image: plain numpy min-label propagation
        return _components_numpy(n, np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels


def _components_numpy(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Every node takes the smallest label among its neighbours, with pointer jumping, until stable."""
    label = np.arange(n)
    while True:
        old = label.copy()
        low = np.minimum(label[a], label[b])
        np.minimum.at(label, a, low)
        np.minimum.at(label, b, low)
        label = label[label]  # pointer jumping: follow labels to their own labels
        if np.array_equal(label, old):
            break
    return np.unique(label, return_inverse=True)[1].reshape(-1)


def _rank(policy: str, n: int, a, b, score, lengths, seed, embeddings, labels) -> np.ndarray:
    """A key per row; each group keeps its member with the lowest key (then the lowest index)."""
    if policy == "first":
        return np.zeros(n)
    if policy == "longest":
        return -np.asarray(lengths, dtype=np.float64)
    if policy == "shortest":
        return np.asarray(lengths, dtype=np.float64)
    if policy == "random":
        return np.random.default_rng(seed).permutation(n).astype(np.float64)
    if policy == "centroid":
        if embeddings is not None:
            emb = np.asarray(embeddings, dtype=np.float64)
            means = np.zeros((labels.max() + 1, emb.shape[1]))
            np.add.at(means, labels, emb)
            means /= np.linalg.norm(means, axis=1, keepdims=True).clip(min=1e-12)
            return -np.round(np.einsum("ij,ij->i", emb, means[labels]), 6)  # rounded so float noise is a tie
        summed = np.zeros(n)
        np.add.at(summed, a, score)
        np.add.at(summed, b, score)
        return -np.round(summed, 6)
    raise ValueError(f"unknown keep policy {policy!r}; choose one of {', '.join(KEEP_POLICIES)}")


def leaders(n: int, order: np.ndarray, a: np.ndarray, b: np.ndarray, score: np.ndarray,
            pinned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keeper, score) of each row by clustering by leaders: rows in `order`; a row not yet removed
    stays and removes its pair partners not yet decided (and not pinned), each with the score of that pair."""
    keeper = np.full(n, -1, dtype=np.int64)
    best = np.ones(n, dtype=np.float32)
    if len(a):
        src, dst = np.concatenate([a, b]), np.concatenate([b, a])
        s = np.concatenate([score, score]).astype(np.float32)
        by_src = np.argsort(src, kind="stable")
        dst, s = dst[by_src], s[by_src]
        start = np.searchsorted(src[by_src], np.arange(n + 1)).tolist()
        paired = np.zeros(n, dtype=bool)
        paired[src] = True
        for i in order[paired[order]].tolist():  # only rows with a pair can remove or be removed
            if keeper[i] >= 0:
                continue  # removed by an earlier leader
            keeper[i] = i
            lo, hi = start[i], start[i + 1]
            partners = dst[lo:hi]
            free = (keeper[partners] < 0) & ~pinned[partners]
            keeper[partners[free]] = i
            best[partners[free]] = s[lo:hi][free]
    alone = keeper < 0
    keeper[alone] = np.flatnonzero(alone)
    return keeper, best


def group_and_keep(
    n: int,
    a: np.ndarray,
    b: np.ndarray,
    score: np.ndarray | None = None,
    *,
    keep: str = "first",
    lengths=None,
    seed: int = 0,
    embeddings=None,
    transitive: bool = False,
    pinned: np.ndarray | None = None,
) -> Groups:
    """Connected components over the pairs, and which rows stay under `keep` (see the module doc).

    `transitive=True` is for a relation where every pair within a group holds (equal texts):
    each group then keeps only its first row in policy order.
    """
    if keep not in KEEP_POLICIES:
        raise ValueError(f"unknown keep policy {keep!r}; choose one of {', '.join(KEEP_POLICIES)}")
    if keep in ("longest", "shortest") and lengths is None:
        raise ValueError(f"keep={keep!r} needs the text lengths")
    score = np.ones(len(a)) if score is None else score
    labels = components(n, a, b)
    key = _rank(keep, n, a, b, score, lengths, seed, embeddings, labels)
    pinned = np.zeros(n, dtype=bool) if pinned is None else np.asarray(pinned, dtype=bool)
    order = np.lexsort((np.arange(n), key, ~pinned, labels))  # by group, pinned first, then key, then input order
    if not transitive:
        keeper, best = leaders(n, order, np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64), score, pinned)
        return Groups(labels, keeper, best)
    first_of_group = np.ones(n, dtype=bool)
    first_of_group[1:] = labels[order][1:] != labels[order][:-1]
    keeper_of_label = np.empty(labels.max() + 1 if n else 0, dtype=np.int64)
    keeper_of_label[labels[order][first_of_group]] = order[first_of_group]
    keeper = keeper_of_label[labels] if n else np.empty(0, dtype=np.int64)
    keeper[pinned] = np.flatnonzero(pinned)  # a second pinned row of a group stays too
    return Groups(labels, keeper, np.ones(n, dtype=np.float32))
