"""How a model calls an unlabelled plate: the share of each top label (e.g. a clear plate)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from marco_svc.labels import labels_of
from marco_svc.nets.runner import open_runner
from marco_svc.registry import StoredModel
from marco_svc.train.datasets import Example
from marco_svc.train.evaluation import predict_examples


def top_label_shares(
    model: StoredModel, paths: Sequence[Path], fmt: str | None = None, batch_size: int = 16
) -> dict[str, Any]:
    """Per head, the fraction of images whose most probable label is each label."""
    runner = open_runner(model.card, model.folder, fmt)
    examples = [Example(str(path), "", str(path)) for path in paths]
    kept, probs, failed = predict_examples(runner, examples, batch_size, None, None)
    shares: dict[str, Any] = {"images": len(kept), "failed": len(failed), "format": runner.fmt}
    for scheme, values in probs.items():
        labels = labels_of(scheme)
        counts = Counter(labels[i] for i in values.argmax(axis=1))
        shares[scheme] = {label: counts.get(label, 0) / max(len(kept), 1) for label in labels}
    return shares
