"""Crystal rules as data: when is a drop a hit?

- `top_k` (Merck): a hit if any crystal class is among the k most probable classes
  (ten-way classes when the model has them, else the four MARCO classes).
- `threshold` (MARCO): a hit if P(Crystals) >= t; t is given, or read from an operating
  point stored in the model card (e.g. the recall at 1.6% false positives).

P(Crystals) is the four-way head's value when present, else the sum of the ten-way
crystal classes. Rules have a compact text form for settings: `top_k:3`,
`threshold:0.42`, `threshold:op=fpr_0.016`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from marco_svc.labels import CRYSTAL_CLASSES_10, CRYSTALS, MARCO4_LABELS, MERCK10_LABELS

RuleKind = Literal["top_k", "threshold"]
DEFAULT_THRESHOLD = 0.5


class RuleError(ValueError):
    """A rule that cannot be read or applied."""


@dataclass(frozen=True)
class CrystalRule:
    kind: RuleKind = "top_k"
    k: int = 3
    threshold: float | None = None
    operating_point: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("top_k", "threshold"):
            raise RuleError(f"unknown crystal rule {self.kind!r} (top_k or threshold)")
        if self.kind == "top_k" and not 1 <= self.k <= len(MERCK10_LABELS):
            raise RuleError(f"top_k needs 1 <= k <= {len(MERCK10_LABELS)}, not {self.k}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise RuleError(f"threshold must lie in [0, 1], not {self.threshold}")

    @classmethod
    def parse(cls, text: str) -> CrystalRule:
        """Read `top_k:3`, `top_k`, `threshold:0.42`, `threshold:op=NAME` or `threshold`."""
        kind, _, arg = text.strip().partition(":")
        arg = arg.strip()
        try:
            if kind == "top_k":
                return cls("top_k", k=int(arg) if arg else 3)
            if kind == "threshold":
                if arg.startswith("op="):
                    return cls("threshold", operating_point=arg[3:])
                return cls("threshold", threshold=float(arg) if arg else None)
        except ValueError as exc:
            raise RuleError(f"crystal rule {text!r}: {exc}") from None
        raise RuleError(f"crystal rule {text!r} is not like top_k:3 or threshold:0.5")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CrystalRule:
        fields = {k: data[k] for k in ("kind", "k", "threshold", "operating_point") if k in data}
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        if self.kind == "top_k":
            return f"top_k:{self.k}"
        if self.operating_point:
            return f"threshold:op={self.operating_point}"
        return "threshold" if self.threshold is None else f"threshold:{self.threshold:g}"


@dataclass(frozen=True)
class Decision:
    hit: bool
    p_crystal: float
    rule: dict[str, Any]


def p_crystal(probabilities: Mapping[str, float]) -> float:
    """P(Crystals): the four-way value when present, else the summed ten-way crystal classes."""
    if CRYSTALS in probabilities:
        return float(probabilities[CRYSTALS])
    if not any(label in probabilities for label in MERCK10_LABELS):
        raise RuleError(f"no known labels among {sorted(probabilities)}")
    return float(sum(probabilities.get(label, 0.0) for label in CRYSTAL_CLASSES_10))


def _resolve_threshold(rule: CrystalRule, operating_points: Mapping[str, Any]) -> float:
    if rule.threshold is not None:
        return rule.threshold
    if rule.operating_point is None:
        return DEFAULT_THRESHOLD
    point = operating_points.get(rule.operating_point)
    if point is None:
        known = ", ".join(sorted(operating_points)) or "none"
        raise RuleError(
            f"the model card has no operating point {rule.operating_point!r} (it has: {known})"
        )
    return float(point["threshold"] if isinstance(point, Mapping) else point)


def _top_k_hit(probabilities: Mapping[str, float], k: int) -> bool:
    ten = {label: probabilities[label] for label in MERCK10_LABELS if label in probabilities}
    if ten:
        ranked, crystal = ten, set(CRYSTAL_CLASSES_10)
    else:
        ranked = {label: probabilities[label] for label in MARCO4_LABELS if label in probabilities}
        crystal = {CRYSTALS}
    top = sorted(ranked, key=lambda label: (-ranked[label], label))[:k]
    return any(label in crystal for label in top)


def decide(
    probabilities: Mapping[str, float],
    rule: CrystalRule,
    operating_points: Mapping[str, Any] | None = None,
) -> Decision:
    """Apply a rule to one image's probabilities; the stored rule records what was used."""
    p = p_crystal(probabilities)
    used = rule.to_dict()
    if rule.kind == "top_k":
        return Decision(_top_k_hit(probabilities, rule.k), p, used)
    threshold = _resolve_threshold(rule, operating_points or {})
    used["threshold"] = threshold
    return Decision(p >= threshold, p, used)
