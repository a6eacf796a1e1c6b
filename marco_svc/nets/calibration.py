"""Temperature scaling as a model card states it, applied to a runner's probabilities.

A card's `calibration` maps a head to its entry, e.g. `{"marco4": {"temperature": 1.8,
"unknown_below": 0.5, ...}}` (`marco_svc.train.calibration` fits it). Runners give
probabilities, not logits; softmax(log(p) / T) equals softmax(logits / T), so the scaling is
applied to the probabilities after any runner (Keras, LiteRT) in `scoring.batch`. numpy
only: the edge agent applies it too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

DEFAULT_UNKNOWN_BELOW = 0.5  # a calibrated top-1 four-way confidence below this is Unknown
LOG_FLOOR = 1e-12  # probabilities are clipped here before the log (fitting and serving alike)


def log_probabilities(probs: np.ndarray) -> np.ndarray:
    """log p in float64, with p clipped at LOG_FLOOR (a 0 from float32 softmax stays finite)."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), LOG_FLOOR, None))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    weights = np.exp(shifted)
    return weights / weights.sum(axis=-1, keepdims=True)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T) per row, in the input's float dtype; T == 1 returns `probs`."""
    if temperature == 1.0:
        return probs
    dtype = probs.dtype if np.issubdtype(probs.dtype, np.floating) else np.float64
    return softmax(log_probabilities(probs) / temperature).astype(dtype)


def calibrate_outputs(
    calibration: Mapping[str, Any], outputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """{scheme: (N, k) probabilities} with each calibrated head's temperature applied."""
    return {
        scheme: apply_temperature(values, float(calibration[scheme]["temperature"]))
        if scheme in calibration
        else values
        for scheme, values in outputs.items()
    }


def check_calibration(calibration: Mapping[str, Any], heads: Mapping[str, Any]) -> None:
    """Raise ValueError unless each entry names a head of the card, with 0 < temperature
    (finite) and 0 <= unknown_below < 1."""
    if not isinstance(calibration, Mapping):
        raise ValueError(f"calibration must be an object of heads, not {calibration!r}")
    for scheme, entry in calibration.items():
        if scheme not in heads:
            raise ValueError(f"calibration of {scheme!r}, which is no head of the model")
        if not isinstance(entry, Mapping) or "temperature" not in entry:
            raise ValueError(f"calibration of {scheme} has no temperature")
        temperature = entry["temperature"]
        if not _number(temperature) or not 0 < temperature < math.inf:
            raise ValueError(f"calibration of {scheme}: temperature must be > 0, not {temperature}")
        below = entry.get("unknown_below", DEFAULT_UNKNOWN_BELOW)
        if not _number(below) or not 0 <= below < 1:
            raise ValueError(
                f"calibration of {scheme}: unknown_below must be in [0, 1), not {below}"
            )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
