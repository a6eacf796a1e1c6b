"""Promote a candidate model version only if it beats the active one on held-out labels.

Both models run over the same labelled images (`evaluation.evaluate_model`); the decision
reads their four-way calls (the MARCO head, or a ten-way-only model's probabilities summed
into the four classes). The candidate is **better** when its four-way accuracy is strictly
higher AND its crystal recall (the share of crystal drops whose four-way call is Crystals)
is not lower (by more than `recall_tolerance`, 0 unless asked); on a tie, or when either
falls short, the active model stays. Where the data has no crystal drops, accuracy alone
decides (and the reasons say so).

The candidate's card keeps the comparison: its evaluation figures under
metrics.evaluation.<data name> (as `marco-svc evaluate --update-card` writes them, operating
points included) and the decision, with both models' figures, under
metrics.promotion.<data name>. A shipped (read-only) candidate is compared, not recorded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from marco_svc import registry
from marco_svc.config import Settings
from marco_svc.db.session import Database
from marco_svc.labels import (
    CRYSTALS,
    MARCO4,
    MARCO4_LABELS,
    MERCK10,
    TEN_TO_FOUR,
    ten_to_four_matrix,
)
from marco_svc.registry import StoredModel
from marco_svc.train.datasets import read_dataset
from marco_svc.train.evaluation import (
    EvaluationResult,
    apply_to_card,
    card_figures,
    data_name,
    evaluate_model,
    write_result_report,
)
from marco_svc.train.metrics import DEFAULT_FPRS, evaluate

PROMOTION_KEY = "promotion"
RULE = (
    "better = four-way accuracy strictly higher AND crystal recall (crystal drops called "
    "Crystals) not lower{slack}, on the same held-out images"
)
HEADLINE_POINT = f"fpr_{DEFAULT_FPRS[0]:g}"
Progress = Callable[[str], None]


class PromotionError(ValueError):
    """A promotion that cannot be decided, and why."""


@dataclass(frozen=True)
class Figures:
    """One model's figures on the held-out data (four-way unless named ten-way)."""

    model: str
    format: str
    examples: int
    accuracy: float
    crystal_recall: float | None
    per_class: dict[str, float | None]
    per_class_ten: dict[str, float | None] | None
    ten_way_accuracy: float | None
    crystal_recall_at_fpr: float | None  # at HEADLINE_POINT, the threshold fitted on this data
    report: str


@dataclass
class Promotion:
    """What was compared, the decision and why, and what changed."""

    data: str
    data_name: str
    candidate: Figures
    incumbent: Figures
    better: bool
    activated: bool
    reasons: list[str] = field(default_factory=list)
    card: str | None = None  # the candidate's card that records it, when writable
    recall_tolerance: float = 0.0
    decided_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def rule(self) -> str:
        return rule_text(self.recall_tolerance)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rule": self.rule}


def rule_text(recall_tolerance: float = 0.0) -> str:
    slack = f" by more than {recall_tolerance:.1%}" if recall_tolerance else ""
    return RULE.format(slack=slack)


def incumbent_model(settings: Settings, db: Database) -> StoredModel:
    """The active model version, else the shipped default (what scores with none active)."""
    active = registry.active_version(db)
    if active is not None:
        return registry.find(settings, f"{active[0]}:{active[1]}")
    default = registry.default_shipped()
    if default is None:
        raise PromotionError("no active model and no shipped default to compare with")
    return default


def four_way(result: EvaluationResult) -> dict[str, Any]:
    """`metrics.evaluate` figures of the four-way call: the MARCO head's, or a ten-way-only
    head's probabilities summed into the four classes."""
    if MARCO4 in result.heads:
        return result.heads[MARCO4].figures
    head = result.heads[MERCK10]
    labels = head.figures["labels"]
    y_true = np.array([MARCO4_LABELS.index(TEN_TO_FOUR[labels[i]]) for i in head.y_true])
    return evaluate(y_true, head.probs @ ten_to_four_matrix(), MARCO4_LABELS)


def figures_of(result: EvaluationResult, report: Path) -> Figures:
    four = four_way(result)
    ten = result.heads.get(MERCK10)
    point = four["crystal"]["operating_points"].get(HEADLINE_POINT)
    return Figures(
        model=result.model,
        format=result.fmt,
        examples=four["examples"],
        accuracy=four["accuracy"],
        crystal_recall=four["per_class_accuracy"][CRYSTALS],
        per_class=four["per_class_accuracy"],
        per_class_ten=ten.figures["per_class_accuracy"] if ten else None,
        ten_way_accuracy=ten.figures["accuracy"] if ten else None,
        crystal_recall_at_fpr=point["recall"] if point else None,
        report=str(report),
    )


def decide(
    candidate: Figures, incumbent: Figures, recall_tolerance: float = 0.0
) -> tuple[bool, list[str]]:
    """(better, the reasons) under `rule_text(recall_tolerance)`."""
    gained = candidate.accuracy > incumbent.accuracy
    reasons = [
        f"four-way accuracy {incumbent.accuracy:.1%} -> {candidate.accuracy:.1%}"
        + ("" if gained else " (not higher)")
    ]
    kept = True
    if candidate.crystal_recall is None or incumbent.crystal_recall is None:
        reasons.append("no crystal drops in the data: crystal recall not compared")
    else:
        lower = candidate.crystal_recall < incumbent.crystal_recall
        kept = candidate.crystal_recall >= incumbent.crystal_recall - recall_tolerance
        note = " (lower, within the tolerance)" if lower and kept else " (lower)" if lower else ""
        reasons.append(
            f"crystal recall {incumbent.crystal_recall:.1%} -> {candidate.crystal_recall:.1%}{note}"
        )
    return gained and kept, reasons


def _writable(model: StoredModel) -> bool:
    card = model.folder / "card.json"
    return model.where != "shipped" and os.access(card, os.W_OK)


def _reports_root(settings: Settings, candidate: StoredModel) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"promote-{candidate.card.name}-{candidate.card.version}-{stamp}"
    base = settings.resolved_data_dir / "reports" / name
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def _record(
    candidate: StoredModel, name: str, result: EvaluationResult, promotion: Promotion
) -> str:
    """Store the candidate's figures and the decision in its card; returns the card's path."""
    apply_to_card(candidate.card, name, card_figures(result))
    record = {k: v for k, v in promotion.as_dict().items() if k not in ("card", "data_name")}
    candidate.card.metrics.setdefault(PROMOTION_KEY, {})[name] = record
    return str(candidate.card.save(candidate.folder))


def promote(
    settings: Settings,
    db: Database,
    candidate_ref: str,
    data_spec: str,
    *,
    scheme: str | None = None,
    fmt: str | None = None,
    batch_size: int = 32,
    activate: bool = True,
    recall_tolerance: float = 0.0,
    progress: Progress | None = None,
) -> Promotion:
    """Evaluate the candidate and the active model on `data_spec` (a labelled set, as
    `marco-svc evaluate` reads); record the comparison in the candidate's card; activate
    the candidate when it is better and `activate` is true."""
    say = progress or (lambda _message: None)
    candidate = registry.find(settings, candidate_ref)
    incumbent = incumbent_model(settings, db)
    if candidate.card.ref == incumbent.card.ref:
        raise PromotionError(f"{candidate.ref} is already the active model")
    if activate and candidate.where == "path":
        raise PromotionError(
            f"{candidate_ref} is a folder, not a registered model: register it first "
            "(`marco-svc train` registers what it trains)"
        )
    data = read_dataset(data_spec, scheme)
    name = data_name(data_spec)
    reports = _reports_root(settings, candidate)
    measured: dict[str, tuple[EvaluationResult, Figures]] = {}
    for role, model in (("incumbent", incumbent), ("candidate", candidate)):
        say(f"evaluating the {role} {model.ref} on {len(data.examples)} images of {name}")
        result = evaluate_model(model, data, fmt, batch_size, max_pixels=settings.max_image_pixels)
        write_result_report(reports / role, result)
        measured[role] = (result, figures_of(result, reports / role / "report.html"))
    better, reasons = decide(measured["candidate"][1], measured["incumbent"][1], recall_tolerance)
    promotion = Promotion(
        data=data.origin,
        data_name=name,
        candidate=measured["candidate"][1],
        incumbent=measured["incumbent"][1],
        better=better,
        activated=False,
        reasons=reasons,
        recall_tolerance=recall_tolerance,
    )
    if better and activate:
        registry.upsert_version(db, candidate)
        registry.activate(db, candidate.ref)
        promotion.activated = True
    if _writable(candidate):
        promotion.card = _record(candidate, name, measured["candidate"][0], promotion)
        if candidate.where == "registry":
            registry.upsert_version(db, candidate)  # the row mirrors the card's metrics
    else:
        reasons.append(f"{candidate.ref} is read-only ({candidate.where}): its card is unchanged")
    if settings.model:
        reasons.append(
            f"note: the `model` setting ({settings.model}) chooses the scoring model over "
            "the active version"
        )
    return promotion
