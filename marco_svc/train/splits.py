"""Group-aware splits: every example of a group (plate, drop) lands in the same split."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from marco_svc.train.datasets import DatasetError, Example, LabelledSet


def _bucket(group: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split(
    data: LabelledSet, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> list[LabelledSet]:
    """Train/validation/test (or any number of) splits by hashing each group with the seed."""
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise DatasetError(f"split fractions {list(fractions)} must be >= 0 and sum to 1")
    edges = [sum(fractions[: i + 1]) for i in range(len(fractions))]
    parts: list[list[Example]] = [[] for _ in fractions]
    for example in data.examples:
        position = _bucket(example.group, seed)
        index = next(i for i, edge in enumerate(edges) if position < edge or i == len(edges) - 1)
        parts[index].append(example)
    return [
        LabelledSet(f"{data.origin} [split {i + 1}/{len(parts)}]", data.scheme, part)
        for i, part in enumerate(parts)
    ]
