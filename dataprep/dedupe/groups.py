"""Duplicate groups and the keep policy.

Groups are the connected components of the graph of found pairs, so duplicates are
transitive (A~B and B~C put A, B, C in one group even when A and C are not a pair) and the
groups do not depend on row order. One row per group is kept, chosen by the policy:
- `first`: the earliest row in input order;
- `longest` / `shortest`: by text length in characters, ties broken by input order;
- `random`: a seeded random member (the same seed gives the same choice);
- `centroid`: the member nearest the group's mean embedding (ties by input order); without
  embeddings (exact and near groups) the member with the highest summed pair score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEEP_POLICIES = ("first", "longest", "shortest", "random", "centroid")


@dataclass
class Groups:
    labels: np.ndarray  # component id of each row
    keeper: np.ndarray  # for each row, the row its group keeps (itself for kept rows and singletons)

    @property
    def removed(self) -> np.ndarray:
        return np.flatnonzero(self.keeper != np.arange(len(self.keeper)))

    def sizes(self) -> np.ndarray:
        """Size of every group with more than one row."""
        counts = np.bincount(self.labels)
        return counts[counts > 1]


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
) -> Groups:
    """Connected components over the pairs, and the row each group keeps under `keep`."""
    if keep not in KEEP_POLICIES:
        raise ValueError(f"unknown keep policy {keep!r}; choose one of {', '.join(KEEP_POLICIES)}")
    if keep in ("longest", "shortest") and lengths is None:
        raise ValueError(f"keep={keep!r} needs the text lengths")
    score = np.ones(len(a)) if score is None else score
    labels = components(n, a, b)
    key = _rank(keep, n, a, b, score, lengths, seed, embeddings, labels)
    order = np.lexsort((np.arange(n), key, labels))  # by group, then key, then input order
    first_of_group = np.ones(n, dtype=bool)
    first_of_group[1:] = labels[order][1:] != labels[order][:-1]
    keeper_of_label = np.empty(labels.max() + 1 if n else 0, dtype=np.int64)
    keeper_of_label[labels[order][first_of_group]] = order[first_of_group]
    return Groups(labels, keeper_of_label[labels] if n else np.empty(0, dtype=np.int64))
