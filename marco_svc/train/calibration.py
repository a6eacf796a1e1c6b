"""Fit a head's temperature on held-out probabilities, and measure calibration (ECE, NLL).

Temperature scaling (Guo et al. 2017): one T > 0 per head, fitted by minimising the
negative log-likelihood of softmax(log(p) / T), which equals softmax(logits / T), so it
works on the probabilities every runner gives. T > 1 softens an overconfident head; the
top class never changes. ECE: 15 equal-width bins of top-1 confidence, the weighted mean
|accuracy - confidence|. The card entry (`calibrate_head`) is what `nets.calibration`
applies and `scoring.confidence` reads (`unknown_below`, default 0.5: a four-way call
with less than even odds is Unknown; a lab changes it on the card).
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np

from marco_svc.labels import MARCO4, labels_of
from marco_svc.nets.calibration import (
    DEFAULT_UNKNOWN_BELOW,
    apply_temperature,
    log_probabilities,
)
from marco_svc.nets.card import ModelCard
from marco_svc.train.evaluation import EvaluationResult, HeadResult
from marco_svc.train.metrics import DEFAULT_FPRS, evaluate

ECE_BINS = 15
CALIBRATED_HEAD = MARCO4
LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))  # the temperatures searched
_GOLDEN = (math.sqrt(5) - 1) / 2


class CalibrationError(ValueError):
    """Probabilities that cannot be calibrated (none, or already calibrated)."""


def nll(y_true: np.ndarray, probs: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes under softmax(log(p) / T)."""
    logits = log_probabilities(probs) / temperature
    top = logits.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(log_norm - logits[np.arange(len(y_true)), y_true]))


def fit_temperature(y_true: np.ndarray, probs: np.ndarray, tolerance: float = 1e-5) -> float:
    """The T minimising `nll`, by golden-section search on log T within LOG_T_BOUNDS (the
    NLL is convex in 1/T, so it has one minimum there, or the search ends at a bound)."""
    y_true, probs = _checked(y_true, probs)
    low, high = LOG_T_BOUNDS
    a, b = high - _GOLDEN * (high - low), low + _GOLDEN * (high - low)
    fa, fb = nll(y_true, probs, math.exp(a)), nll(y_true, probs, math.exp(b))
    while high - low > tolerance:
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - _GOLDEN * (high - low)
            fa = nll(y_true, probs, math.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + _GOLDEN * (high - low)
            fb = nll(y_true, probs, math.exp(b))
    return math.exp((low + high) / 2)


def expected_calibration_error(
    y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE over `bins` equal-width bins (lo, hi] of top-1 confidence."""
    y_true, probs = _checked(y_true, probs)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.sum() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total / len(y_true))


def calibrate_head(
    y_true: np.ndarray,
    probs: np.ndarray,
    *,
    y_eval: np.ndarray | None = None,
    probs_eval: np.ndarray | None = None,
    unknown_below: float = DEFAULT_UNKNOWN_BELOW,
) -> dict[str, Any]:
    """A card entry: T fitted on (y_true, probs), the network's own probabilities; ECE and
    NLL before and after measured on (y_eval, probs_eval), else on the fitting set; the
    share of those calls that fall Unknown, and how often confident/Unknown calls are right."""
    if not 0 <= unknown_below < 1:
        raise CalibrationError(f"unknown_below must be in [0, 1), not {unknown_below}")
    temperature = fit_temperature(y_true, probs)
    if probs_eval is None or y_eval is None:
        y_eval, probs_eval = y_true, probs
    y_eval, probs_eval = _checked(y_eval, probs_eval)
    after = apply_temperature(probs_eval, temperature)
    unknown = after.max(axis=1) < unknown_below
    correct = after.argmax(axis=1) == y_eval
    return {
        "temperature": round(temperature, 6),
        "unknown_below": unknown_below,
        "ece_before": round(expected_calibration_error(y_eval, probs_eval), 6),
        "ece_after": round(expected_calibration_error(y_eval, after), 6),
        "nll_before": round(nll(y_eval, probs_eval), 6),
        "nll_after": round(nll(y_eval, probs_eval, temperature), 6),
        "bins": ECE_BINS,
        "examples": len(y_eval),
        "fitted_examples": len(y_true),
        "unknown_share": round(float(unknown.mean()), 6),
        "accuracy_confident": _share(correct[~unknown]),
        "accuracy_unknown": _share(correct[unknown]),
    }


def calibrate_card(
    card: ModelCard,
    validation: EvaluationResult,
    test: EvaluationResult | None = None,
    unknown_below: float | None = None,
) -> EvaluationResult:
    """Fit the four-way head's T on `validation`, measure on `test` (else on `validation`),
    and store the entry in `card.calibration`. Both results must hold the network's own
    probabilities. Returns the measured result on the calibrated (served) scale, figures
    and operating points recomputed, for the report and `evaluation.apply_to_card`.
    `unknown_below` defaults to the card's current value, else DEFAULT_UNKNOWN_BELOW."""
    measured = test or validation
    for result in (validation, measured):
        if result.calibrated:
            raise CalibrationError(f"{result.data}: give the network's own probabilities")
        if CALIBRATED_HEAD not in result.heads:
            raise CalibrationError(f"{result.data}: the {CALIBRATED_HEAD} head was not scored")
    fit, check = validation.heads[CALIBRATED_HEAD], measured.heads[CALIBRATED_HEAD]
    if unknown_below is None:
        current = card.calibration.get(CALIBRATED_HEAD, {})
        unknown_below = float(current.get("unknown_below", DEFAULT_UNKNOWN_BELOW))
    entry = calibrate_head(
        fit.y_true,
        fit.probs,
        y_eval=check.y_true,
        probs_eval=check.probs,
        unknown_below=unknown_below,
    )
    entry.update(
        fitted_on=validation.data,
        evaluated_on=measured.data,
        format=validation.fmt,
        fitted_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    card.calibration = {**card.calibration, CALIBRATED_HEAD: entry}
    card.check_calibration()
    return served(measured, card.calibration)


def served(result: EvaluationResult, calibration: dict[str, Any]) -> EvaluationResult:
    """`result` (the network's own probabilities) as served under `calibration`: each
    calibrated head's probabilities scaled and its figures recomputed; no model runs."""
    heads = dict(result.heads)
    for scheme, entry in calibration.items():
        head = heads.get(scheme)
        if head is None:
            continue
        probs = apply_temperature(head.probs, float(entry["temperature"]))
        figures = evaluate(head.y_true, probs, labels_of(scheme), DEFAULT_FPRS)
        heads[scheme] = HeadResult(scheme, head.y_true, probs, figures, head.mapped_from)
    return dataclasses.replace(result, heads=heads, calibrated=True)


def _checked(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, probs = np.asarray(y_true, dtype=np.int64), np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(y_true) != len(probs) or not len(probs):
        raise CalibrationError(
            f"need (n, classes) probabilities and n labels, n > 0; got {probs.shape}, "
            f"{y_true.shape}"
        )
    return y_true, probs


def _share(values: np.ndarray) -> float | None:
    return round(float(values.mean()), 6) if values.size else None
