"""Multi-label classification metrics and decision-threshold tuning (numpy + scikit-learn).

`y_true` is a (rows x labels) 0/1 array, `scores` the sigmoid probabilities of the same shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np

THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)


def predict(scores: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """0/1 predictions; `threshold` is one number or one per label."""
    return (scores >= np.asarray(threshold)).astype(int)


def multilabel_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray = 0.5,
                       label_names: list[str] | None = None) -> dict[str, Any]:
    """Sample-averaged Jaccard, micro/macro F1, micro ROC-AUC, subset accuracy, Hamming loss, per-label table."""
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss, jaccard_score, roc_auc_score

    y_true = np.asarray(y_true).astype(int)
    y_pred = predict(scores, threshold)
    try:
        auc = float(roc_auc_score(y_true, scores, average="micro"))
    except ValueError:  # only one class present overall
        auc = float("nan")
    return {
        "jaccard_samples": float(jaccard_score(y_true, y_pred, average="samples", zero_division=1.0)),
        "f1_micro": float(f1_score(y_true, y_pred, average="micro", zero_division=0.0)),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0.0)),
        "roc_auc_micro": auc,
        "subset_accuracy": float(accuracy_score(y_true, y_pred)),
        "hamming_loss": float(hamming_loss(y_true, y_pred)),
        "rows": int(y_true.shape[0]),
        "per_label": per_label_table(y_true, y_pred, scores, label_names),
    }


def per_label_table(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray,
                    label_names: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per label: support, predicted count, precision, recall, F1 and ROC-AUC."""
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0.0)
    names = label_names or [str(j) for j in range(y_true.shape[1])]
    table = []
    for j, name in enumerate(names):
        has_both = 0 < y_true[:, j].sum() < len(y_true)
        table.append({
            "label": name,
            "support": int(support[j]),
            "predicted": int(y_pred[:, j].sum()),
            "precision": float(p[j]),
            "recall": float(r[j]),
            "f1": float(f[j]),
            "roc_auc": float(roc_auc_score(y_true[:, j], scores[:, j])) if has_both else None,
        })
    return table


def _f1_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def tune_threshold(y_true: np.ndarray, scores: np.ndarray, per_label: bool = False,
                   grid: np.ndarray = THRESHOLD_GRID) -> float | np.ndarray:
    """The threshold(s) on `grid` that maximise micro-F1 (global) or each label's F1 (per label).

    Ties go to the threshold closest to 0.5, so a flat optimum does not drift to an extreme.
    """
    y = np.asarray(y_true).astype(bool)
    order = np.argsort(np.abs(grid - 0.5), kind="stable")  # candidates nearest 0.5 first
    grid = grid[order]
    pred = scores[None, :, :] >= grid[:, None, None]  # (grid, rows, labels)
    tp = (pred & y).sum(axis=1)
    fp = (pred & ~y).sum(axis=1)
    fn = (~pred & y).sum(axis=1)
    if per_label:
        return grid[np.argmax(_f1_counts(tp, fp, fn), axis=0)].astype(float)
    micro = _f1_counts(tp.sum(axis=1), fp.sum(axis=1), fn.sum(axis=1))
    return float(grid[int(np.argmax(micro))])


def format_table(metrics: dict[str, Any]) -> str:
    """A plain-text per-label table for the terminal and the README."""
    lines = [f"{'label':<16} {'support':>7} {'pred':>5} {'prec':>6} {'rec':>6} {'f1':>6} {'auc':>6}"]
    for row in metrics["per_label"]:
        auc = f"{row['roc_auc']:.3f}" if row["roc_auc"] is not None else "   -"
        lines.append(
            f"{row['label'][:16]:<16} {row['support']:>7} {row['predicted']:>5} {row['precision']:>6.3f} "
            f"{row['recall']:>6.3f} {row['f1']:>6.3f} {auc:>6}"
        )
    return "\n".join(lines)
