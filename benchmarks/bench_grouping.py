"""Benchmark: dedupe's grouping on the command's machine (groups.group_and_keep) vs on Ray Data
(groups_on_ray.group_and_keep_on_ray, the fallback beyond DRIVER_GROUPING_MAX_PAIRS), side by side.

A near-duplicate-like graph over --rows rows: clusters of 2–20 rows (each a chain plus random
chords), on shuffled row ids, with float32 scores. Prints the seconds of each (Ray's workers
started before the clock; both timed without tracing), the large-star/small-star rounds (with the
per-block contraction, and without it), the driver path's peak traced memory per pair (what sets
the bound; from a separate tracemalloc run, which is several times slower and not timed), and
checks that labels, keepers and scores are identical.

    python benchmarks/bench_grouping.py [--rows 1000000] [--keep centroid]
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def graph(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.permutation(rows)
    sizes = rng.integers(2, 21, rows // 4)
    ends = np.cumsum(sizes)
    ends = ends[ends <= rows // 2]  # half the rows are in a cluster
    a, b = [], []
    for start, end in zip(np.r_[0, ends[:-1]], ends, strict=True):
        members = ids[start:end]
        a.append(members[:-1])
        b.append(members[1:])  # a chain: removal by chaining would differ
        chords = rng.integers(0, len(members), (2, len(members) // 2))
        a.append(members[chords[0]])
        b.append(members[chords[1]])
    a, b = np.concatenate(a), np.concatenate(b)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    code = np.unique(lo[lo != hi] * rows + hi[lo != hi])
    return code // rows, code % rows, rng.uniform(0.8, 1, len(code)).astype(np.float32)


def main() -> None:
    from dataprep.dedupe.groups import group_and_keep
    from dataprep.dedupe.groups_on_ray import component_roots, group_and_keep_on_ray
    from dataprep.engine import cluster

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--keep", default="centroid")
    args = ap.parse_args()
    a, b, score = graph(args.rows)
    opts = dict(keep=args.keep, lengths=np.random.default_rng(1).integers(1, 500, args.rows), seed=0)
    print(f"{args.rows:,} rows, {len(a):,} pairs, keep={args.keep}")

    t = time.perf_counter()
    local = group_and_keep(args.rows, a, b, score, **opts)
    driver_s = time.perf_counter() - t  # untraced: tracemalloc slows numpy/scipy code several-fold
    tracemalloc.start()
    group_and_keep(args.rows, a, b, score, **opts)  # a separate run, only for the peak memory
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    with cluster() as ray:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        group_and_keep_on_ray(4, np.array([0, 1]), np.array([1, 2]), **opts)  # workers started before the clock
        t = time.perf_counter()
        on_ray = group_and_keep_on_ray(args.rows, a, b, score, **opts)
        ray_s = time.perf_counter() - t
        t = time.perf_counter()
        _, rounds = component_roots(args.rows, a, b)
        cc_s = time.perf_counter() - t
        t = time.perf_counter()
        _, bare_rounds = component_roots(args.rows, a, b, contract=False)
        bare_s = time.perf_counter() - t
    same = (np.array_equal(local.labels, on_ray.labels) and np.array_equal(local.keeper, on_ray.keeper)
            and np.array_equal(local.score, on_ray.score))
    assert same, "grouping on Ray differs from the driver's"
    print(f"driver (group_and_keep)        {driver_s:8.2f} s   peak traced {peak / 2**20:,.0f} MiB = "
          f"{peak / len(a):.0f} B per pair")
    print(f"ray, {cpus} CPUs (whole fallback)   {ray_s:8.2f} s   {ray_s / driver_s:.2f}x the driver's time")
    print(f"  of which components alone    {cc_s:8.2f} s   {rounds} large-star/small-star rounds")
    print(f"  components, no contraction   {bare_s:8.2f} s   {bare_rounds} rounds")
    print(f"removed {len(local.removed):,}; labels, keepers and scores identical")


if __name__ == "__main__":
    main()
