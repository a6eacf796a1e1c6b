"""Held-out figures per imager look: how well a model trained on some looks sees each one.

A synthetic manifest names each image's look (synth/dataset.py); the test split is cut
into one set per look and each is evaluated on its own. A look left out of training is
rendered as a set of its own and reported the same way, marked `in_training: false`.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from marco_svc.labels import MARCO4
from marco_svc.train.datasets import LabelledSet


def looks_of(manifest: Path) -> dict[str, str]:
    """{resolved image path: look} from a synthetic manifest (formulatrix where unnamed)."""
    found: dict[str, str] = {}
    with Path(manifest).open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            source = Path(row["path"])
            source = source if source.is_absolute() else Path(manifest).parent / source
            found[str(source.resolve())] = row.get("look") or "formulatrix"
    return found


def split_by_look(data: LabelledSet, looks: Mapping[str, str]) -> dict[str, LabelledSet]:
    """One labelled set per look, in the order looks first appear."""
    parts: dict[str, LabelledSet] = {}
    for example in data.examples:
        look = looks.get(str(Path(example.source).resolve()), "formulatrix")
        part = parts.setdefault(look, LabelledSet(f"{data.origin} [look {look}]", data.scheme))
        part.examples.append(example)
    return parts


def look_summary(figures: Mapping[str, Any], in_training: bool) -> dict[str, Any]:
    """The few figures per look the card and README show (from evaluation.card_figures)."""
    head = figures["heads"].get(MARCO4) or next(iter(figures["heads"].values()))
    miss = head["crystal_miss_rate"].get("top_1")
    return {
        "in_training": in_training,
        "examples": head["examples"],
        "accuracy": round(head["accuracy"], 4),
        "crystal_recall_top1": None if miss is None else round(1.0 - miss, 4),
        "crystal_roc_auc": None
        if head["crystal_roc_auc"] is None
        else round(head["crystal_roc_auc"], 4),
        "per_class_accuracy": {
            k: None if v is None else round(v, 4) for k, v in head["per_class_accuracy"].items()
        },
    }
