"""`models promote`'s rule and refusals (the whole loop: tests/test_lab_loop.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from marco_svc.cli import cli
from marco_svc.labels import MARCO4, MARCO4_LABELS, MERCK10, MERCK10_LABELS
from marco_svc.train.evaluation import EvaluationResult, HeadResult
from marco_svc.train.metrics import evaluate
from marco_svc.train.promotion import Figures, decide, four_way, rule_text
from tests.nets_helpers import write_fake_model_folder


def figures(accuracy: float, crystal_recall: float | None) -> Figures:
    return Figures(
        model="m:1",
        format="keras",
        examples=100,
        accuracy=accuracy,
        crystal_recall=crystal_recall,
        per_class={},
        per_class_ten=None,
        ten_way_accuracy=None,
        crystal_recall_at_fpr=None,
        report="",
    )


@pytest.mark.parametrize(
    ("candidate", "incumbent", "tolerance", "better"),
    [
        ((0.80, 0.90), (0.70, 0.90), 0.0, True),  # more accurate, same recall
        ((0.80, 0.95), (0.70, 0.90), 0.0, True),
        ((0.80, 0.88), (0.70, 0.90), 0.0, False),  # a crystal drop lost
        ((0.80, 0.88), (0.70, 0.90), 0.05, True),  # ... within the tolerance
        ((0.70, 0.99), (0.70, 0.90), 0.0, False),  # a tie on accuracy keeps the active one
        ((0.60, 0.99), (0.70, 0.90), 0.0, False),
        ((0.80, None), (0.70, None), 0.0, True),  # no crystal drops: accuracy decides
    ],
)
def test_the_rule(
    candidate: tuple[float, float | None],
    incumbent: tuple[float, float | None],
    tolerance: float,
    better: bool,
) -> None:
    decided, reasons = decide(figures(*candidate), figures(*incumbent), tolerance)
    assert decided is better
    assert reasons[0].startswith("four-way accuracy")


def test_the_reasons_say_what_fell_short() -> None:
    _, reasons = decide(figures(0.7, 0.8), figures(0.7, 0.9))
    assert reasons == [
        "four-way accuracy 70.0% -> 70.0% (not higher)",
        "crystal recall 90.0% -> 80.0% (lower)",
    ]
    _, reasons = decide(figures(0.8, 0.88), figures(0.7, 0.9), 0.05)
    assert reasons[1] == "crystal recall 90.0% -> 88.0% (lower, within the tolerance)"
    assert "not lower by more than 5.0%" in rule_text(0.05)
    assert "not lower," in rule_text()


def test_a_ten_way_only_model_is_judged_on_its_probabilities_summed_to_four() -> None:
    y_true = np.array([MERCK10_LABELS.index(label) for label in ("clear", "large crystals")])
    probs = np.zeros((2, 10))
    probs[0, MERCK10_LABELS.index("light precipitate")] = 1.0  # Precipitate: wrong
    probs[1, MERCK10_LABELS.index("micro crystals")] = 1.0  # Crystals: right, ten-way wrong
    head = HeadResult(MERCK10, y_true, probs, evaluate(y_true, probs, MERCK10_LABELS))
    result = EvaluationResult("m:1", "keras", "data", MERCK10, 2, heads={MERCK10: head})
    four = four_way(result)
    assert four["labels"] == list(MARCO4_LABELS)
    assert four["accuracy"] == 0.5 and head.figures["accuracy"] == 0.0
    assert four["per_class_accuracy"]["Crystals"] == 1.0
    assert MARCO4 not in result.heads


def invoke(data: Path, *args: str) -> tuple[int, str]:
    env = {"MARCO_DATA_DIR": str(data), "MARCO_CONFIG": "", "MARCO_MODEL": ""}
    done = CliRunner().invoke(cli, ["models", "promote", *args], env=env)
    return done.exit_code, done.output


def test_refusals_are_one_line_before_any_evaluation(tmp_path: Path) -> None:
    data = tmp_path / "data"
    nothing = str(tmp_path / "absent.csv")  # never read: each refusal comes first
    code, output = invoke(data, "default:1", "--data", nothing)
    assert (code, output) == (1, "Error: default:1 is already the active model\n")
    code, output = invoke(data, "nope:1", "--data", nothing)
    assert code == 1 and "no model 'nope:1'" in output
    folder = write_fake_model_folder(tmp_path / "loose", "loose", "1")
    code, output = invoke(data, str(folder), "--data", nothing)
    assert code == 1 and "is a folder, not a registered model: register it first" in output
