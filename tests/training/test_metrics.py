"""Multi-label metrics against values computed by hand, and threshold tuning."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import multilabel_metrics, tune_threshold

# 4 rows x 3 labels
Y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
S = np.array([[0.9, 0.2, 0.6], [0.4, 0.7, 0.1], [0.8, 0.3, 0.55], [0.1, 0.2, 0.3]])
# at 0.5: predictions [[1,0,1],[0,1,0],[1,0,1],[0,0,0]]


def test_metrics_match_hand_computed_values():
    m = multilabel_metrics(Y, S, 0.5, ["a", "b", "c"])
    # per row Jaccard: 1, 1, |{0}|/|{0,1,2}| = 1/3, |{}|/|{2}| = 0
    assert m["jaccard_samples"] == pytest.approx((1 + 1 + 1 / 3 + 0) / 4)
    # tp 4 (a:2, b:1, c:1), fp 1 (c row 3), fn 2 (b row 3, c row 4)
    assert m["f1_micro"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))
    # per label F1: a 1.0; b: tp1 fn1 -> 2/3; c: tp1 fp1 fn1 -> 1/2
    assert m["f1_macro"] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    assert m["subset_accuracy"] == pytest.approx(2 / 4)
    assert m["hamming_loss"] == pytest.approx(3 / 12)
    assert [r["f1"] for r in m["per_label"]] == pytest.approx([1, 2 / 3, 1 / 2])
    assert [r["support"] for r in m["per_label"]] == [2, 2, 2]
    assert [r["predicted"] for r in m["per_label"]] == [2, 1, 2]
    # label a: positives 0.9, 0.8 above negatives 0.4, 0.1 -> AUC 1
    assert m["per_label"][0]["roc_auc"] == pytest.approx(1.0)


def test_micro_auc_counts_ranked_pairs():
    # micro AUC: 6 positives, 6 negatives pooled; fraction of (pos, neg) pairs ranked right
    pos = S[Y == 1]
    neg = S[Y == 0]
    pairs = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    assert multilabel_metrics(Y, S)["roc_auc_micro"] == pytest.approx(pairs / (len(pos) * len(neg)))


def test_per_label_threshold_array_is_applied_per_column():
    m = multilabel_metrics(Y, S, np.array([0.5, 0.25, 0.25]))
    # b now predicted on rows 2,3 (0.7, 0.3) and c on rows 1,3,4 (0.6, 0.55, 0.3): tp 6, fp 1, fn 0
    assert m["f1_micro"] == pytest.approx(12 / 13)


def test_tune_threshold_global_and_per_label():
    # global: thresholds in (0.2, 0.3] give micro-F1 12/14 (tp 6, fp 2), the best; the tie nearest 0.5 wins
    assert tune_threshold(Y, S) == pytest.approx(0.3)
    per = tune_threshold(Y, S, per_label=True)
    assert per.shape == (3,)
    # b needs a threshold in (0.2, 0.3] to catch 0.3 without 0.2: closest to 0.5 is 0.3
    assert per.tolist() == pytest.approx([0.5, 0.3, 0.3])  # a: any of (0.4, 0.8]; c: (0.1, 0.3]
    assert multilabel_metrics(Y, S, per)["f1_macro"] >= multilabel_metrics(Y, S, 0.5)["f1_macro"]
