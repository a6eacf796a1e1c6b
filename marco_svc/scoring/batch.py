"""One batch of image bytes through a model runner: check, preprocess, predict.

The one scoring path: the engine (stored images), `marco-svc score` (files) and evaluation
(labelled sets) all call `score_batch`, so each image gets the same checks (the
`max_image_pixels` limit, a full decode), the same preprocessing and the same probabilities
(the card's temperature scaling, `nets.calibration`, is applied here and nowhere else),
whoever asks. An image that fails is reported with its reason; the others in the batch go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from marco_svc.errors import first_line
from marco_svc.image_check import inspect_image_bytes
from marco_svc.nets.calibration import calibrate_outputs
from marco_svc.nets.runner import Runner, top_label

Key = TypeVar("Key")


@dataclass(frozen=True)
class Limits:
    """What an image must pass before it is scored (None: no pixel limit)."""

    max_pixels: int | None = None


@dataclass(frozen=True)
class Scored(Generic[Key]):
    """One image's result: per-head probabilities, by label, the top label, and the seconds
    it took (its own preparation plus its share of the model call)."""

    key: Key
    heads: dict[str, np.ndarray]
    probabilities: dict[str, float]
    top: str
    seconds: float
    extra: Any = None


@dataclass(frozen=True)
class Failed(Generic[Key]):
    key: Key
    reason: str


def score_batch(
    runner: Runner,
    items: Sequence[tuple[Key, bytes]],
    limits: Limits,
    extra: Callable[[Key, bytes], Any] | None = None,
    *,
    calibrated: bool = True,
) -> tuple[list[Scored[Key]], list[Failed[Key]]]:
    """Score (key, bytes) pairs in one model call; `extra(key, data)` adds a per-image
    result (e.g. quality flags), and its failure fails the image too. The probabilities
    are calibrated as the card says unless `calibrated=False` (the network's own)."""
    ready: list[tuple[Key, np.ndarray, Any, float]] = []
    failed: list[Failed[Key]] = []
    for key, data in items:
        started = time.perf_counter()
        try:
            if limits.max_pixels is not None:
                inspect_image_bytes(data, limits.max_pixels)
            x = runner.preprocess(data)
            more = extra(key, data) if extra is not None else None
        except Exception as exc:  # any decoder error is the image's fault
            failed.append(Failed(key, first_line(exc)))
            continue
        ready.append((key, x, more, time.perf_counter() - started))
    if not ready:
        return [], failed
    started = time.perf_counter()
    outputs = runner.predict(np.stack([x for _, x, _, _ in ready]))
    if calibrated:
        outputs = calibrate_outputs(runner.card.calibration, outputs)
    share = (time.perf_counter() - started) / len(ready)
    rows = runner.label_probabilities(outputs)
    scored = [
        Scored(
            key,
            {scheme: np.asarray(values[n]) for scheme, values in outputs.items()},
            probabilities,
            top_label(runner.card, probabilities),
            seconds + share,
            more,
        )
        for n, ((key, _, more, seconds), probabilities) in enumerate(zip(ready, rows, strict=True))
    ]
    return scored, failed
