"""Split quality and speed on GoEmotions train (43,410 rows, 28 labels, multi-label), 90/5/5, side by
side in one run:

- dataprep split: iterative stratification over groups (equal normalised text kept together);
- iterstrat's MultilabelStratifiedShuffleSplit (the iterative-stratification package: the peer), test
  then val from the rest;
- sklearn train_test_split stratified on the label set, sets of < 10 rows pooled (the usual recipe);
- a seeded random split (naive).

For each: rows per split, the largest and mean gap between a split's share of a label's rows and the
split's fraction (0 = perfect), the rarest label's rows per split, rows whose normalised text also
sits in another split (leaks), and seconds (the assignment; dataprep also end to end: read, group,
assign, write).

    PYTHONPATH=. python benchmarks/bench_split.py [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "goemotions"
FRACTIONS = {"train": 0.9, "val": 0.05, "test": 0.05}


def quality(labels: list[list[str]], assigned: np.ndarray, texts: list[str]) -> dict:
    from dataprep.dedupe.exact import normalize_text

    names = sorted({x for ls in labels for x in ls})
    gaps = []
    per_label = {}
    for name in names:
        has = np.array([name in ls for ls in labels])
        counts = [int((has & (assigned == i)).sum()) for i in range(3)]
        per_label[name] = counts
        gaps += [abs(c / has.sum() - f) for c, f in zip(counts, FRACTIONS.values(), strict=True)]
    splits_of: dict[str, set] = {}
    for t, s in zip(texts, assigned.tolist(), strict=True):
        splits_of.setdefault(normalize_text(t), set()).add(s)
    leaks = sum(1 for t in texts if len(splits_of[normalize_text(t)]) > 1)
    rarest = min(per_label, key=lambda n: sum(per_label[n]))
    return {"rows": [int((assigned == i).sum()) for i in range(3)], "max_gap": max(gaps), "mean_gap": float(np.mean(gaps)),
            "rarest": (rarest, per_label[rarest]), "leaks": leaks}


def ours(records: Path, out: Path, seed: int, labels, texts):
    import polars as pl

    from dataprep.split import assign_splits, row_groups

    frame = pl.read_parquet(records / "records.parquet")
    t = time.perf_counter()
    groups, _ = row_groups(frame, ("text",), (), None)
    assigned = assign_splits(groups, FRACTIONS, seed, labels)
    dt = time.perf_counter() - t
    from dataprep.split import split

    t = time.perf_counter()
    split(records, out, val=0.05, test=0.05, seed=seed, force=True)
    return assigned, dt, time.perf_counter() - t


def iterstrat(labels, seed):
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit
    from sklearn.preprocessing import MultiLabelBinarizer

    y = MultiLabelBinarizer().fit_transform(labels)
    x = np.zeros((len(labels), 1))
    t = time.perf_counter()
    rest, test = next(MultilabelStratifiedShuffleSplit(n_splits=1, test_size=0.05, random_state=seed).split(x, y))
    tr, va = next(MultilabelStratifiedShuffleSplit(n_splits=1, test_size=0.05 / 0.95, random_state=seed)
                  .split(x[rest], y[rest]))
    dt = time.perf_counter() - t
    assigned = np.zeros(len(labels), dtype=int)
    assigned[rest[va]] = 1
    assigned[test] = 2
    return assigned, dt


def labelset(labels, seed):
    from sklearn.model_selection import train_test_split

    t = time.perf_counter()
    keys = ["|".join(sorted(ls)) for ls in labels]
    common = Counter(keys)
    strata = np.array([k if common[k] >= 10 else "rare" for k in keys])
    idx = np.arange(len(labels))
    rest, test = train_test_split(idx, test_size=0.05, stratify=strata, random_state=seed)
    tr, va = train_test_split(rest, test_size=0.05 / 0.95, stratify=strata[rest], random_state=seed)
    dt = time.perf_counter() - t
    assigned = np.zeros(len(labels), dtype=int)
    assigned[va] = 1
    assigned[test] = 2
    return assigned, dt


def naive(n, seed):
    t = time.perf_counter()
    perm = np.random.default_rng(seed).permutation(n)
    assigned = np.zeros(n, dtype=int)
    assigned[perm[: round(0.05 * n)]] = 1
    assigned[perm[round(0.05 * n): round(0.1 * n)]] = 2
    return assigned, time.perf_counter() - t


def main() -> None:
    import polars as pl

    from dataprep.convert import convert

    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        records = Path(tmp) / "go"
        convert(str(DATA / "train.tsv"), str(records), kind="classify", has_header=False,
                mapping={"text": "column_1", "labels": "column_2"}, label_names=str(DATA / "emotions.txt"),
                keep_columns=("column_3",))
        frame = pl.read_parquet(records / "records.parquet")
        labels, texts = frame["labels"].to_list(), frame["text"].to_list()
        a, dt, end_to_end = ours(records, Path(tmp) / "split", args.seed, labels, texts)
        results = [("dataprep split", a, dt, end_to_end), ("iterstrat MultilabelStratifiedShuffleSplit",
                   *iterstrat(labels, args.seed), None), ("sklearn label-set strata (<10 pooled)",
                   *labelset(labels, args.seed), None), ("random (naive)", *naive(len(labels), args.seed), None)]
    print(f"GoEmotions train: {len(labels):,} rows, {len({x for ls in labels for x in ls})} labels, seed {args.seed}")
    print(f"{'method':44s} {'train/val/test':>19s} {'max gap':>8s} {'mean gap':>9s} {'rarest label rows':>24s} "
          f"{'leaks':>6s} {'s':>6s}")
    for name, assigned, dt, e2e in results:
        q = quality(labels, assigned, texts)
        rarest = f"{q['rarest'][0]} {'/'.join(map(str, q['rarest'][1]))}"
        sec = f"{dt:.2f}" + (f" ({e2e:.1f} end to end)" if e2e else "")
        print(f"{name:44s} {'/'.join(map(str, q['rows'])):>19s} {q['max_gap']:8.4f} {q['mean_gap']:9.4f} "
              f"{rarest:>24s} {q['leaks']:6d} {sec}")


if __name__ == "__main__":
    main()
