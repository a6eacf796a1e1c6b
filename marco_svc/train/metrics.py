"""Evaluation figures: confusion matrix as fractions (MARCO Table 4: rows are true labels),
per-class accuracy, one-vs-rest ROC AUC, top-k accuracy, the crystal miss rate under
top-k rules (Merck), and crystal recall at fixed false-positive rates (MARCO Fig. 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from marco_svc.labels import CRYSTAL_CLASSES_10, CRYSTALS

DEFAULT_FPRS = (0.016, 0.05, 0.19)


def confusion_fractions(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes): row i holds where the examples of true class i went, summing to 1."""
    counts = np.zeros((classes, classes), dtype=np.float64)
    np.add.at(counts, (y_true, y_pred), 1)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def roc_curve(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold (descending), and thresholds."""
    order = np.argsort(-score, kind="mergesort")
    score, positive = score[order], positive[order].astype(bool)
    distinct = np.r_[np.nonzero(np.diff(score))[0], score.size - 1]
    tps = np.cumsum(positive)[distinct]
    fps = (1 + distinct) - tps
    p, n = max(positive.sum(), 1), max((~positive).sum(), 1)
    tpr, fpr = np.r_[0.0, tps / p], np.r_[0.0, fps / n]
    return fpr, tpr, np.r_[np.inf, score[distinct]]


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve (rank statistic, ties count one half); None without both classes."""
    positive = positive.astype(bool)
    if positive.all() or not positive.any():
        return None
    ranks = _average_ranks(score)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    sorted_values = values[order]
    start = 0
    for end in np.r_[np.nonzero(np.diff(sorted_values))[0] + 1, values.size]:
        ranks[order[start:end]] = (start + end + 1) / 2.0  # 1-based average rank of the tie
        start = end
    return ranks


def top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int) -> float:
    top = np.argsort(-probs, axis=1)[:, :k]
    return float((top == y_true[:, None]).any(axis=1).mean())


def crystal_columns(labels: Sequence[str]) -> list[int]:
    """Which outputs are crystal classes: 'Crystals' (four-way) or the ten-way crystal classes."""
    return [i for i, label in enumerate(labels) if label == CRYSTALS or label in CRYSTAL_CLASSES_10]


def recall_at_fpr(
    positive: np.ndarray, score: np.ndarray, targets: Sequence[float] = DEFAULT_FPRS
) -> dict[str, dict[str, float]]:
    """For each target false-positive rate: the lowest threshold that stays at or below it."""
    fpr, tpr, thresholds = roc_curve(positive, score)
    points = {}
    for target in targets:
        allowed = np.nonzero(fpr <= target)[0]
        best = allowed[-1]
        points[f"fpr_{target:g}"] = {
            "threshold": float(min(thresholds[best], 1.0)),
            "recall": float(tpr[best]),
            "fpr": float(fpr[best]),
            "target_fpr": float(target),
        }
    return points


def evaluate(
    y_true: np.ndarray,
    probs: np.ndarray,
    labels: Sequence[str],
    fprs: Sequence[float] = DEFAULT_FPRS,
) -> dict[str, Any]:
    """Every figure for one head: y_true are class indices into `labels`, probs (N, C)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    classes = len(labels)
    y_pred = probs.argmax(axis=1)
    confusion = confusion_fractions(y_true, y_pred, classes)
    support = np.bincount(y_true, minlength=classes)
    crystal = crystal_columns(labels)
    is_crystal = np.isin(y_true, crystal)
    p_crystal = probs[:, crystal].sum(axis=1)
    ranked = np.argsort(-probs, axis=1)
    top_k_rules = {}
    for k in (1, 2, 3):
        hit = np.isin(ranked[:, :k], crystal).any(axis=1)
        top_k_rules[f"top_{k}"] = {
            "miss_rate": float((~hit[is_crystal]).mean()) if is_crystal.any() else None,
            "false_positive_rate": float(hit[~is_crystal].mean()) if (~is_crystal).any() else None,
        }
    has_both = is_crystal.any() and (~is_crystal).any()
    return {
        "labels": list(labels),
        "examples": int(y_true.size),
        "support": {label: int(n) for label, n in zip(labels, support, strict=True)},
        "accuracy": float((y_pred == y_true).mean()),
        "top_k_accuracy": {f"top_{k}": top_k_accuracy(y_true, probs, k) for k in (1, 2, 3)},
        "per_class_accuracy": {
            label: float(confusion[i, i]) if support[i] else None for i, label in enumerate(labels)
        },
        "confusion": {"rows_true_columns_predicted": confusion.round(6).tolist()},
        "roc_auc": {label: roc_auc(y_true == i, probs[:, i]) for i, label in enumerate(labels)},
        "crystal": {
            "roc_auc": roc_auc(is_crystal, p_crystal),
            "top_k_rules": top_k_rules,
            "operating_points": recall_at_fpr(is_crystal, p_crystal, fprs) if has_both else {},
        },
    }
