"""Crystal rules on fixed probability vectors, and the one 10 -> 4 mapping."""

from __future__ import annotations

import numpy as np
import pytest

from marco_svc.labels import MARCO4_LABELS, MERCK10_LABELS, as_mapping, ten_to_four_matrix, to_four
from marco_svc.scoring.rules import CrystalRule, RuleError, decide, p_crystal

# Ten-way: clear 0.50, light precipitate 0.25, small crystals 0.15 (3rd), rest small.
TEN = as_mapping(MERCK10_LABELS, [0.02, 0.50, 0.03, 0.01, 0.25, 0.01, 0.01, 0.01, 0.01, 0.15])
# Four-way: Clear 0.6, Crystals 0.3, Other 0.04, Precipitate 0.06.
FOUR = as_mapping(MARCO4_LABELS, [0.6, 0.3, 0.04, 0.06])


@pytest.mark.parametrize(("k", "hit"), [(1, False), (2, False), (3, True), (10, True)])
def test_top_k_on_ten_way(k: int, hit: bool) -> None:
    decision = decide(TEN, CrystalRule("top_k", k=k))
    assert decision.hit is hit
    assert decision.p_crystal == pytest.approx(0.01 + 0.01 + 0.01 + 0.01 + 0.15)
    assert decision.rule == {"kind": "top_k", "k": k, "threshold": None, "operating_point": None}


@pytest.mark.parametrize(("k", "hit"), [(1, False), (2, True)])
def test_top_k_on_four_way(k: int, hit: bool) -> None:
    assert decide(FOUR, CrystalRule("top_k", k=k)).hit is hit


def test_top_k_prefers_the_ten_way_head_of_a_two_head_model() -> None:
    both = {**FOUR, **TEN}
    assert decide(both, CrystalRule("top_k", k=2)).hit is False  # ten-way top 2: clear, light
    assert decide(both, CrystalRule("threshold", threshold=0.3)).p_crystal == 0.3  # four-way


@pytest.mark.parametrize(("t", "hit"), [(0.29, True), (0.3, True), (0.31, False)])
def test_threshold(t: float, hit: bool) -> None:
    decision = decide(FOUR, CrystalRule("threshold", threshold=t))
    assert decision.hit is hit and decision.rule["threshold"] == t


def test_threshold_from_an_operating_point() -> None:
    points = {"fpr_0.016": {"threshold": 0.25, "recall": 0.94, "fpr": 0.016}}
    decision = decide(FOUR, CrystalRule.parse("threshold:op=fpr_0.016"), points)
    assert decision.hit is True and decision.rule["threshold"] == 0.25
    with pytest.raises(RuleError, match=r"no operating point 'fpr_0\.01'"):
        decide(FOUR, CrystalRule.parse("threshold:op=fpr_0.01"), points)


@pytest.mark.parametrize("text", ["top_k:3", "threshold:0.42", "threshold:op=fpr_0.016"])
def test_text_form_round_trips(text: str) -> None:
    rule = CrystalRule.parse(text)
    assert str(rule) == text and CrystalRule.from_dict(rule.to_dict()) == rule


@pytest.mark.parametrize("text", ["top_k:0", "top_k:x", "threshold:2", "majority"])
def test_bad_rules(text: str) -> None:
    with pytest.raises(RuleError):
        CrystalRule.parse(text)


def test_ten_to_four() -> None:
    four = to_four(TEN)
    assert four["Crystals"] == pytest.approx(p_crystal(TEN))
    assert four["Precipitate"] == pytest.approx(0.03 + 0.25 + 0.01)
    assert four["Other"] == pytest.approx(0.02) and four["Clear"] == pytest.approx(0.50)
    matrix = ten_to_four_matrix()
    vector = np.array([TEN[label] for label in MERCK10_LABELS])
    np.testing.assert_allclose(vector @ matrix, [four[label] for label in MARCO4_LABELS])
    assert (matrix.sum(axis=1) == 1).all()


def test_lab_rules_by_longest_prefix() -> None:
    from marco_svc.scoring.lab_rules import LabRules

    rules = LabRules.parse("threshold:0.5", "HWI=top_k:3; HWI-X=top_k:1 ;C3=threshold:op=fpr_0.016")
    assert str(rules.for_barcode("HWI-001")) == "top_k:3"
    assert str(rules.for_barcode("HWI-X7")) == "top_k:1"
    assert str(rules.for_barcode("C3-9")) == "threshold:op=fpr_0.016"
    assert str(rules.for_barcode("90j8")) == "threshold:0.5"
    assert str(rules.for_barcode(None)) == "threshold:0.5"
    with pytest.raises(RuleError, match="PREFIX=RULE"):
        LabRules.parse("top_k:3", "no-equals-sign")
