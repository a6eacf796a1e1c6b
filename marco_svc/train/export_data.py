"""Inputs for checking (and calibrating) an export: image files, or fresh synthetic drops."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from marco_svc.nets.card import ModelCard
from marco_svc.nets.preprocessing import from_spec

# Seeds used for export checks only: never the seed of a training set.
EXPORT_CHECK_SEED = 90_000_017


def file_inputs(card: ModelCard, paths: Iterable[Path], limit: int) -> np.ndarray:
    """Preprocessed inputs of up to `limit` readable images (unreadable ones are skipped)."""
    prep = from_spec(card.preprocessing)
    inputs = []
    for path in paths:
        if len(inputs) >= limit:
            break
        try:
            inputs.append(prep.np_from_bytes(Path(path).read_bytes()))
        except (OSError, ValueError):
            continue
    return np.stack(inputs) if inputs else np.zeros((0, *prep.input_shape), np.float32)


def synthetic_inputs(card: ModelCard, count: int, seed: int = EXPORT_CHECK_SEED) -> np.ndarray:
    """Preprocessed inputs of `count` synthetic drops, balanced over the ten classes."""
    from marco_svc.synth.dataset import iter_drops

    prep = from_spec(card.preprocessing)
    return np.stack([prep.np_from_pixels(drop.image) for _, drop in iter_drops(count, seed)])
