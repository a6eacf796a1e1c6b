"""The Unknown band: a call whose calibrated four-way top-1 confidence is below the card's
`calibration.marco4.unknown_below` is Unknown; otherwise it is confident.

A model without a four-way calibration has no band (None): its probabilities are not
calibrated, so their top-1 value says little about how often the call is right.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from marco_svc.labels import MARCO4, MARCO4_LABELS
from marco_svc.nets.calibration import DEFAULT_UNKNOWN_BELOW

Band = Literal["confident", "unknown"]
CONFIDENT: Band = "confident"
UNKNOWN: Band = "unknown"


def unknown_below(calibration: Mapping[str, Any] | None) -> float | None:
    """The four-way head's Unknown threshold from a card's `calibration`; None without one."""
    entry = (calibration or {}).get(MARCO4)
    if not entry:
        return None
    return float(entry.get("unknown_below", DEFAULT_UNKNOWN_BELOW))


def top1_confidence(probabilities: Mapping[str, float]) -> float | None:
    """The largest four-way probability; None when the four-way labels are absent."""
    four = [float(probabilities[label]) for label in MARCO4_LABELS if label in probabilities]
    return max(four) if len(four) == len(MARCO4_LABELS) else None


def band(probabilities: Mapping[str, float], below: float | None) -> Band | None:
    """UNKNOWN when the top-1 four-way confidence is below `below`, else CONFIDENT; None
    without a threshold (an uncalibrated model) or without four-way probabilities."""
    top = top1_confidence(probabilities) if below is not None else None
    if top is None or below is None:
        return None
    return UNKNOWN if top < below else CONFIDENT
