"""Precision and recall of semantic dedupe on STS-B, to choose the default cosine threshold.

Pairs with a gold similarity ≥ 4.5 are duplicates, ≤ 1.0 non-duplicates. With --all the rest
is embedded too (not scored, but shown: how many "related, not duplicate" pairs a threshold
would flag).
Embeds both sentences of each pair with the dedupe encoder (MiniLM by default, cached) and
prints precision / recall / F1 per threshold.

A second table runs dedupe's grouping on the distinct sentences as one data set, once with the
old rule (every row of a connected component removed for one kept row: removal by chaining)
and once with the current one (a row is removed only for a direct pair partner that stays),
and counts rows removed, removals whose own similarity to the kept row is below the threshold,
duplicate pairs whose two rows both stay (missed), and the labelled pairs that end up merged
(one removed for the other, or both for one row).

    python benchmarks/stsb_threshold.py [--model minilm] [--data ../shared/data/stsb] [--all]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataprep.dedupe.groups import group_and_keep  # noqa: E402
from dataprep.dedupe.semantic import semantic_pairs  # noqa: E402
from dataprep.embed import embed_texts, load_encoder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def read_stsb(data: Path) -> tuple[np.ndarray, list[str], list[str]]:
    scores, s1, s2 = [], [], []
    for name in ("sts-train.csv", "sts-dev.csv", "sts-test.csv"):
        with open(data / name, encoding="utf-8") as fh:
            for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
                scores.append(float(row[4]))  # rows with 9 columns: the extra 2 are trailing
                s1.append(row[5])
                s2.append(row[6])
    return np.array(scores), s1, s2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data" / "stsb")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--all", action="store_true", help="also embed the in-between pairs (1 < gold < 4.5)")
    args = ap.parse_args()
    gold, s1, s2 = read_stsb(args.data)
    enc = load_encoder(args.model, args.device)
    pos, neg, mid = gold >= 4.5, gold <= 1.0, (gold > 1.0) & (gold < 4.5)
    keep = pos | neg | (mid if args.all else False)  # the in-between pairs only with --all
    s1 = [s for s, k in zip(s1, keep, strict=True) if k]
    s2 = [s for s, k in zip(s2, keep, strict=True) if k]
    gold, pos, neg, mid = gold[keep], pos[keep], neg[keep], mid[keep]
    t = time.perf_counter()
    emb = embed_texts(s1 + s2, enc, batch_size=64, progress=True)
    cos = np.einsum("ij,ij->i", emb[: len(s1)], emb[len(s1) :])
    print(f"STS-B train+dev+test: {len(gold)} pairs; duplicates (gold ≥ 4.5): {pos.sum()}, "
          f"non-duplicates (gold ≤ 1.0): {neg.sum()}, in between: {mid.sum()}; model {args.model} on {enc.device}; "
          f"embedded in {time.perf_counter() - t:.1f} s")
    print("| threshold | precision | recall | F1 | non-dups flagged | in-between pairs flagged | of which gold < 3 |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    low = mid & (gold < 3.0)
    for th in THRESHOLDS:
        flag = cos >= th
        tp, fp = int((flag & pos).sum()), int((flag & neg).sum())
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / pos.sum()
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        between = f"{int((flag & mid).sum())} ({(flag & mid).sum() / mid.sum():.1%})" if mid.any() else "not run"
        below3 = f"{int((flag & low).sum())} ({(flag & low).sum() / low.sum():.1%})" if low.any() else "not run"
        print(f"| {th:.2f} | {precision:.3f} | {recall:.3f} | {f1:.3f} | {fp} | {between} | {below3} |")
    grouping_table(s1 + s2, emb, len(s1), pos, neg, mid & (gold < 3.0))


THRESHOLDS = [0.70, 0.75, 0.80, 0.82, 0.84, 0.85, 0.86, 0.88, 0.90, 0.92, 0.94, 0.96, 0.98]


def grouping_table(texts: list[str], emb: np.ndarray, n_pairs: int, pos, neg, low) -> None:
    """Dedupe of the distinct sentences: removal by chaining (before) against direct pairs only (now)."""
    uniq, first, inverse = np.unique(np.array(texts, dtype=object), return_index=True, return_inverse=True)
    x = emb[first]
    left, right = inverse[:n_pairs], inverse[n_pairs:]
    t = time.perf_counter()
    res = semantic_pairs(x, min(THRESHOLDS), device="cpu")
    print(f"\nDedupe of the {len(uniq)} distinct sentences as one data set (search {time.perf_counter() - t:.1f} s); "
          "'merged': both sentences of a labelled pair end up as one kept row")
    print("| threshold | rows removed before | rows removed now | removals below the threshold before (lowest score) "
          "| dup pairs with both rows kept before / now | non-dup pairs merged before / now "
          "| gold < 3 pairs merged before / now |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for th in THRESHOLDS:
        ok = res.score >= th
        a, b, score = res.a[ok], res.b[ok], res.score[ok]
        row = {}
        for name, transitive in (("before", True), ("now", False)):
            g = group_and_keep(len(uniq), a, b, score, transitive=transitive)
            removed = g.removed
            direct = np.einsum("ij,ij->i", x[removed], x[g.keeper[removed]])
            merged = g.keeper[left] == g.keeper[right]  # one kept row stands for both
            both_kept = (g.keeper[left] == left) & (g.keeper[right] == right) & (left != right)
            row[name] = (len(removed), int((direct < th).sum()), float(direct.min()) if len(direct) else float("nan"),
                         int((both_kept & pos).sum()), int((merged & neg).sum()), int((merged & low).sum()))
        bf, nw = row["before"], row["now"]
        below = f"{bf[1]} ({bf[2]:.2f})" if bf[1] else "0"
        print(f"| {th:.2f} | {bf[0]} | {nw[0]} | {below} | {bf[3]} / {nw[3]} | {bf[4]} / {nw[4]} | "
              f"{bf[5] if low.any() else 'not run'} / {nw[5] if low.any() else 'not run'} |")


if __name__ == "__main__":
    main()
