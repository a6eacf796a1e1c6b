"""Label schemes: MARCO four-way, Merck ten-way, and the one 10 -> 4 mapping."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

MARCO4 = "marco4"
MERCK10 = "merck10"

# The official graph's strings, in its output order.
MARCO4_LABELS: tuple[str, ...] = ("Clear", "Crystals", "Other", "Precipitate")

# Ghafurian et al. (Merck), in the order of their confusion matrix.
MERCK10_LABELS: tuple[str, ...] = (
    "bad drop",
    "clear",
    "heavy precipitate",
    "large crystals",
    "light precipitate",
    "medium crystals",
    "micro crystals",
    "needles & plates",
    "phase separation",
    "small crystals",
)

TEN_TO_FOUR: Mapping[str, str] = {
    "bad drop": "Other",
    "clear": "Clear",
    "heavy precipitate": "Precipitate",
    "light precipitate": "Precipitate",
    "phase separation": "Precipitate",
    "large crystals": "Crystals",
    "medium crystals": "Crystals",
    "micro crystals": "Crystals",
    "needles & plates": "Crystals",
    "small crystals": "Crystals",
}

CRYSTALS = "Crystals"
CRYSTAL_CLASSES_10: tuple[str, ...] = tuple(k for k, v in TEN_TO_FOUR.items() if v == CRYSTALS)

SCHEMES: Mapping[str, tuple[str, ...]] = {MARCO4: MARCO4_LABELS, MERCK10: MERCK10_LABELS}

# The manual scale of ISPyB's BLSampleImageScore (SynchWeb's keys 0-9), in score order.
ISPYB10 = "ispyb10"
ISPYB10_LABELS: tuple[str, ...] = (
    "Clear",
    "Contaminated",
    "Light Precipitate",
    "Heavy Precipitate",
    "Phase Separation",
    "Spherulites",
    "Microcrystals",
    "1D Crystals",
    "2D Crystals",
    "3D Crystals",
)
ISPYB10_TO_FOUR: Mapping[str, str] = {
    "Clear": "Clear",
    "Contaminated": "Other",
    "Light Precipitate": "Precipitate",
    "Heavy Precipitate": "Precipitate",
    "Phase Separation": "Precipitate",  # as Merck's ten-way scheme maps it
    "Spherulites": "Crystals",  # microcrystalline: a lead a crystallographer follows up
    "Microcrystals": "Crystals",
    "1D Crystals": "Crystals",
    "2D Crystals": "Crystals",
    "3D Crystals": "Crystals",
}
# The scales people score on: the model schemes and ISPyB's manual scale.
HUMAN_SCALES: Mapping[str, tuple[str, ...]] = {**SCHEMES, ISPYB10: ISPYB10_LABELS}


def labels_of(scheme: str) -> tuple[str, ...]:
    try:
        return SCHEMES[scheme]
    except KeyError:
        raise ValueError(f"unknown label scheme {scheme!r} (known: {', '.join(SCHEMES)})") from None


def scheme_of_label(label: str) -> str:
    """The scheme a label string belongs to (labels are unique across schemes)."""
    for scheme, labels in SCHEMES.items():
        if label in labels:
            return scheme
    raise ValueError(f"unknown label {label!r}")


def ten_to_four_matrix() -> np.ndarray:
    """A (10, 4) 0/1 matrix: probabilities_10 @ M gives probabilities_4."""
    matrix = np.zeros((len(MERCK10_LABELS), len(MARCO4_LABELS)), dtype=np.float32)
    for i, label in enumerate(MERCK10_LABELS):
        matrix[i, MARCO4_LABELS.index(TEN_TO_FOUR[label])] = 1.0
    return matrix


def to_four(probabilities: Mapping[str, float]) -> dict[str, float]:
    """Sum ten-way probabilities into the four MARCO classes; four-way ones pass through
    (a two-head model's: its four-way head)."""
    if any(label in probabilities for label in MARCO4_LABELS):
        return {label: float(probabilities.get(label, 0.0)) for label in MARCO4_LABELS}
    four = dict.fromkeys(MARCO4_LABELS, 0.0)
    for label, p in probabilities.items():
        four[TEN_TO_FOUR[label]] += float(p)
    return four


def as_mapping(labels: Sequence[str], vector: Sequence[float]) -> dict[str, float]:
    """A probability vector as {label: probability}."""
    if len(labels) != len(vector):
        raise ValueError(f"{len(vector)} probabilities for {len(labels)} labels")
    return {label: float(p) for label, p in zip(labels, vector, strict=True)}
