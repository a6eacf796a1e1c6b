"""Evaluation figures against their definitions, and the report files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from marco_svc.labels import MARCO4_LABELS, MERCK10_LABELS
from marco_svc.train.metrics import evaluate, recall_at_fpr, roc_auc
from marco_svc.train.report import write_report


def pairwise_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """The definition: P(score of a positive > score of a negative), ties one half."""
    pos, neg = score[positive], score[~positive]
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def test_auc_matches_the_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    positive = rng.random(300) < 0.3
    score = np.round(rng.random(300) + positive * 0.4, 2)  # rounding makes ties
    assert roc_auc(positive, score) == pytest.approx(pairwise_auc(positive, score))
    assert roc_auc(np.ones(5, bool), score[:5]) is None


def test_recall_at_fpr_respects_the_target() -> None:
    rng = np.random.default_rng(1)
    positive = rng.random(2000) < 0.2
    score = rng.random(2000) * 0.7 + positive * 0.3
    for point in recall_at_fpr(positive, score, (0.016, 0.1)).values():
        predicted = score >= point["threshold"]
        fpr = predicted[~positive].mean()
        assert fpr <= point["target_fpr"] + 1e-12
        assert predicted[positive].mean() == pytest.approx(point["recall"])
        assert fpr == pytest.approx(point["fpr"])


def test_four_way_figures_on_a_fixed_example() -> None:
    # Clear, Crystals, Other, Precipitate
    probs = np.array(
        [
            [0.7, 0.2, 0.05, 0.05],  # Clear, right
            [0.5, 0.4, 0.05, 0.05],  # Crystals, wrong (second)
            [0.1, 0.8, 0.05, 0.05],  # Crystals, right
            [0.1, 0.1, 0.2, 0.6],  # Other, wrong (second)
            [0.1, 0.05, 0.15, 0.7],  # Precipitate, right
        ]
    )
    y = np.array([0, 1, 1, 2, 3])
    figures = evaluate(y, probs, MARCO4_LABELS)
    assert figures["accuracy"] == pytest.approx(0.6)
    assert figures["top_k_accuracy"] == {"top_1": 0.6, "top_2": 1.0, "top_3": 1.0}
    confusion = np.array(figures["confusion"]["rows_true_columns_predicted"])
    np.testing.assert_allclose(confusion[1], [0.5, 0.5, 0, 0])
    np.testing.assert_allclose(confusion.sum(axis=1), 1.0)
    rules = figures["crystal"]["top_k_rules"]
    assert rules["top_1"]["miss_rate"] == pytest.approx(0.5)
    assert rules["top_2"]["miss_rate"] == 0.0
    # Of the three non-crystal drops only the Clear one has Crystals second.
    assert rules["top_2"]["false_positive_rate"] == pytest.approx(1 / 3)


def test_ten_way_crystal_rules_sum_the_crystal_classes() -> None:
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(10), size=50)
    y = rng.integers(0, 10, 50)
    figures = evaluate(y, probs, MERCK10_LABELS)
    assert figures["examples"] == 50
    crystal_cols = [3, 5, 6, 7, 9]  # large, medium, micro, needles & plates, small
    for k in (1, 2, 3):
        ranked = np.argsort(-probs, axis=1)[:, :k]
        is_crystal = np.isin(y, crystal_cols)
        hit = np.isin(ranked, crystal_cols).any(axis=1)
        expected = (~hit[is_crystal]).mean()
        assert figures["crystal"]["top_k_rules"][f"top_{k}"]["miss_rate"] == pytest.approx(expected)


def test_report_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4), size=40)
    y = rng.integers(0, 4, 40)
    figures = evaluate(y, probs, MARCO4_LABELS)
    files = write_report(tmp_path, "m:1", "held-out", {"marco4": (y, probs, figures)})
    assert json.loads(files["json"].read_text())["heads"]["marco4"]["examples"] == 40
    for key in ("confusion_marco4", "roc_marco4"):
        assert files[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "confusion_marco4.png" in files["html"].read_text()
