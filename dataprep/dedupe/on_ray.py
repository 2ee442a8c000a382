"""Dedupe's exact and near methods on Ray Data (`--engine ray`): the same pairs, groups, kept rows
and scores as the local methods (dataprep.dedupe.exact, .minhash, .groups), found by shuffles.

The texts go to the object store once (one Arrow array, read zero-copy by every task); datasets
carry row ids only.

- **exact**: each partition hashes its rows' normalised texts (exact.text_hash); a shuffle by a
  coarse part of the hash brings equal texts together, and each part applies the keep policy to its
  groups, vectorised (the policy's key per row comes from groups._rank, so `random --seed` is the
  same permutation as local). The driver gets only the rows of groups with more than one member.
- **near**: each partition computes its rows' shingles and MinHash signatures (the local
  functions, on its slice) and emits one (band, bucket) key per row and band; a shuffle by a coarse
  part of the key (one shuffle partition's worth of buckets) brings each bucket together, and each part
  emits its buckets' pairs as candidates with the local path's generator (minhash.bucket_pairs, once
  per band); the unique candidates are
  verified in partitions by their true Jaccard (shingles recomputed for the rows of each
  partition's pairs), so no false positive is kept. The pairs come back to the driver (about 16
  bytes per candidate and 20 per verified pair, so 100M candidates need ~2 GB there); they are
  grouped there (groups.group_and_keep) up to groups_on_ray.DRIVER_GROUPING_MAX_PAIRS, and on Ray
  Data beyond it (large-star/small-star components, then the keep policy per component).
"""

from __future__ import annotations

import numpy as np

from dataprep.dedupe.exact import text_hash
from dataprep.dedupe.groups import Groups, _rank
from dataprep.dedupe.minhash import (
    RECALL_WEIGHTS,
    NearResult,
    band_key,
    bucket_pairs,
    checked,
    jaccard,
    optimal_bands,
    shingle_all,
    signatures,
)

ROWS_PER_BLOCK = 20_000  # rows a task hashes or signs at a time (bounded temporaries: minhash.shingle_all)


def _parts(ray, rows: int) -> int:
    """Blocks (or shuffle partitions) for `rows` rows: one per ROWS_PER_BLOCK rows, at least one per CPU."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)), -(-rows // ROWS_PER_BLOCK))


def _ids(ray, n: int):
    """Row ids 0..n-1 as a dataset."""
    return ray.data.range(n, override_num_blocks=min(n, _parts(ray, n)))


def _texts_of(ref, ids: np.ndarray) -> list[str]:
    import ray

    return ray.get(ref).take(ids).to_pylist()


def _collect(ds, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Every row of `ds` on the driver, as numpy columns (empty arrays when there are none)."""
    parts = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
    return {c: np.concatenate([p[c] for p in parts]) if parts else np.empty(0, np.int64) for c in columns}


# ---------------------------------------------------------------- exact


def exact_groups(texts: list[str], *, keep: str, lengths, seed: int, pinned: np.ndarray):
    """(a, b, score, Groups) as exact_pairs + group_and_keep(transitive=True) give them locally."""
    import pyarrow as pa

    from dataprep.engine import cluster, sort_shuffle

    n = len(texts)
    key = _rank(keep, n, None, None, None, lengths, seed, None, None)
    with cluster() as ray, sort_shuffle():
        ref = ray.put(pa.array(texts, pa.large_string()))

        parts = _parts(ray, n)

        def hashed(batch):
            ids = batch["id"]
            digests = np.frombuffer(b"".join(text_hash(t) for t in _texts_of(ref, ids)), dtype=np.int64).reshape(-1, 2)
            part = (digests[:, 0].view(np.uint64) % np.uint64(parts)).astype(np.int64)  # a coarse part of the hash
            return {"part": part, "id": ids, "h1": digests[:, 0], "h2": digests[:, 1]}

        ds = _ids(ray, n).map_batches(hashed, batch_format="numpy", batch_size=None)
        rows = _collect(ds.groupby("part", num_partitions=parts).map_groups(_keep_first(key, pinned), batch_format="numpy"),
                        ("id", "first", "keeper"))
    order = np.argsort(rows["id"], kind="stable")
    ids, first, kept_by = rows["id"][order], rows["first"][order], rows["keeper"][order]
    keeper, root = np.arange(n), np.arange(n)
    keeper[ids], root[ids] = kept_by, first
    labels = np.unique(root, return_inverse=True)[1].reshape(-1) if n else root  # numbered by lowest member, as scipy
    star = ids != first  # every member linked to its group's first row (exact_pairs' star)
    a, b = first[star], ids[star]
    return a, b, np.ones(len(a), np.float32), Groups(labels, keeper, np.ones(n, np.float32))


def _keep_first(key: np.ndarray, pinned: np.ndarray):
    """The step for one part of the hash shuffle (many groups of equal texts, found by one sort in the
    policy's order: pinned rows first, then the key, then input order): each member of a group of two
    or more, its group's first row (its lowest id) and the row it is removed for (the group's first in
    the policy's order; pinned rows stay). Rows come out in the policy's order (the driver sorts them
    by id). Vectorised over the part's groups: a step per group (a Python call per distinct text) made
    exact on Ray ~5x slower (9.6 s against 2.0 s for 220k rows)."""

    def keep_first(part):
        ids, h1, h2 = part["id"], part["h1"], part["h2"]
        if not len(ids):
            return {"id": ids, "first": ids, "keeper": ids}
        order = np.lexsort((ids, key[ids], ~pinned[ids], h2, h1))  # each group together, its leader first
        ids, h1, h2 = ids[order], h1[order], h2[order]
        starts = np.flatnonzero(np.r_[True, (h1[1:] != h1[:-1]) | (h2[1:] != h2[:-1])])
        sizes = np.diff(np.r_[starts, len(ids)])
        member = np.repeat(sizes > 1, sizes)
        first = np.repeat(np.minimum.reduceat(ids, starts), sizes)[member]
        leader = np.repeat(ids[starts], sizes)[member]
        rows = ids[member]
        return {"id": rows, "first": first, "keeper": np.where(pinned[rows], rows, leader)}

    return keep_first


# ---------------------------------------------------------------- near


def near_pairs(texts: list[str], threshold: float = 0.8, *, ngram: int = 5, unit: str = "char", num_perm: int = 128,
               seed: int = 1, borderline: int = 50) -> NearResult:
    """minhash.near_pairs on Ray: the same candidates, scores, pairs and borderline pairs."""
    import pyarrow as pa

    from dataprep.engine import cluster, sort_shuffle

    n = len(texts)
    bands, rows = optimal_bands(threshold, num_perm, *RECALL_WEIGHTS)
    with cluster() as ray, sort_shuffle():
        ref = ray.put(pa.array(texts, pa.large_string()))

        parts = _parts(ray, n * bands // 4)

        def bucket_keys(batch):
            ids = batch["id"]
            sh = shingle_all(_texts_of(ref, ids), ngram, unit)
            sig, valid = signatures(sh, num_perm, seed), sh.sizes() > 0
            keys = [band_key(sig[valid, band * rows : (band + 1) * rows]).view(np.int64) for band in range(bands)]
            empty = ids[~valid]  # texts without shingles: band -1, one bucket, counted, never paired
            band = np.repeat(np.arange(-1, bands, dtype=np.int32), [len(empty)] + [valid.sum()] * bands)
            key = np.concatenate([np.zeros(len(empty), np.int64), *keys])
            # the shuffle groups by a coarse part of (band, bucket): one step per part, not per bucket
            part = (key.view(np.uint64) + band.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) % np.uint64(parts)
            return {"part": part.astype(np.int64), "band": band, "key": key,
                    "id": np.concatenate([empty, np.tile(ids[valid], bands)])}

        keyed = _ids(ray, n).map_batches(bucket_keys, batch_format="numpy", batch_size=None)
        grouped = keyed.groupby("part", num_partitions=parts)
        codes = _collect(grouped.map_groups(_bucket_pairs(n), batch_format="numpy"), ("code",))["code"]
        no_shingles = int((codes == -1).sum())
        codes = np.unique(codes[codes >= 0])
        cand = np.stack([codes // n, codes % n], axis=1) if len(codes) else np.empty((0, 2), np.int64)

        def verified(batch):
            a, b = batch["a"], batch["b"]
            docs = np.unique(np.concatenate([a, b]))
            sh = shingle_all(_texts_of(ref, docs), ngram, unit)
            return {"code": a * n + b, "score": jaccard(sh, np.searchsorted(docs, a), np.searchsorted(docs, b))}

        score = np.empty(0, np.float32)
        if len(cand):
            step = ROWS_PER_BLOCK
            pairs = ray.data.from_arrow([pa.table({"a": cand[i : i + step, 0], "b": cand[i : i + step, 1]})
                                         for i in range(0, len(cand), step)])
            found = _collect(pairs.map_batches(verified, batch_format="numpy", batch_size=None), ("code", "score"))
            score = found["score"][np.argsort(found["code"])].astype(np.float32)  # in candidate order
    return checked(cand, score, threshold, (bands, rows), no_shingles, borderline)


def _bucket_pairs(n: int):
    """The step for one part of the (band, bucket) shuffle (many buckets of several bands): the code
    i*n+j (i < j) of every pair of rows in the same bucket of a band (minhash.bucket_pairs, the local
    path's own candidate generator, once per band), and -1 per row of the texts without shingles
    (band -1). Vectorised over the part's buckets: a step per bucket (a Python call each, ~160M
    buckets at 10M rows) made the shuffle 30x slower than the local engine."""

    def pairs_of_part(group):
        band, key, ids = group["band"], group["key"], group["id"]
        codes = [np.full(int((band == -1).sum()), -1, np.int64)]
        for b in np.unique(band[band >= 0]):
            mine = band == b
            codes.append(bucket_pairs(key[mine], ids[mine], n))
        return {"code": np.concatenate(codes)}

    return pairs_of_part
