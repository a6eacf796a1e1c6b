"""Crystal rules as data: when is a drop a hit?

- `top_k` (Merck): a hit if any crystal class is among the k most probable classes
  (ten-way classes when the model has them, else the four MARCO classes).
- `threshold` (MARCO): a hit if P(Crystals) >= t; t is given, or read from an operating
  point stored in the model card (e.g. the recall at 1.6% false positives).

P(Crystals) is the four-way head's value when present, else the sum of the ten-way
crystal classes. Rules have a compact text form for settings: `top_k:3`,
`threshold:0.42`, `threshold:op=fpr_0.016`.

Option `unknown=hit` (`threshold:0.5,unknown=hit`) sends Unknown drops to review: a drop in
the Unknown band (`scoring.confidence`: a calibrated model, top-1 four-way confidence below
the card's `unknown_below`) is a hit whatever the rule says; a confident drop is decided as
without the option. The default, `unknown=keep`, leaves every decision as the rule makes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from marco_svc.labels import CRYSTAL_CLASSES_10, CRYSTALS, MARCO4_LABELS, MERCK10_LABELS
from marco_svc.scoring.confidence import UNKNOWN, Band, band

RuleKind = Literal["top_k", "threshold"]
UnknownOption = Literal["keep", "hit"]
DEFAULT_THRESHOLD = 0.5


class RuleError(ValueError):
    """A rule that cannot be read or applied."""


@dataclass(frozen=True)
class CrystalRule:
    kind: RuleKind = "top_k"
    k: int = 3
    threshold: float | None = None
    operating_point: str | None = None
    unknown: UnknownOption = "keep"  # "hit": drops in the Unknown band are hits (to review)

    def __post_init__(self) -> None:
        if self.kind not in ("top_k", "threshold"):
            raise RuleError(f"unknown crystal rule {self.kind!r} (top_k or threshold)")
        if self.unknown not in ("keep", "hit"):
            raise RuleError(f"unknown={self.unknown} is not keep or hit")
        if self.kind == "top_k" and not 1 <= self.k <= len(MERCK10_LABELS):
            raise RuleError(f"top_k needs 1 <= k <= {len(MERCK10_LABELS)}, not {self.k}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise RuleError(f"threshold must lie in [0, 1], not {self.threshold}")

    @classmethod
    def parse(cls, text: str) -> CrystalRule:
        """Read `top_k:3`, `top_k`, `threshold:0.42`, `threshold:op=NAME` or `threshold`,
        optionally followed by `,unknown=hit` (or `,unknown=keep`)."""
        rule, *options = (part.strip() for part in text.strip().split(","))
        kind, _, arg = rule.partition(":")
        arg = arg.strip()
        unknown = cls._unknown_option(text, options)
        try:
            if kind == "top_k":
                return cls("top_k", k=int(arg) if arg else 3, unknown=unknown)
            if kind == "threshold":
                if arg.startswith("op="):
                    return cls("threshold", operating_point=arg[3:], unknown=unknown)
                return cls("threshold", threshold=float(arg) if arg else None, unknown=unknown)
        except ValueError as exc:
            raise RuleError(f"crystal rule {text!r}: {exc}") from None
        raise RuleError(f"crystal rule {text!r} is not like top_k:3 or threshold:0.5")

    @staticmethod
    def _unknown_option(text: str, options: list[str]) -> UnknownOption:
        unknown: UnknownOption = "keep"
        for option in options:
            name, _, value = (part.strip() for part in option.partition("="))
            if name != "unknown" or value not in ("keep", "hit"):
                raise RuleError(f"crystal rule {text!r}: option {option!r} is not unknown=hit")
            unknown = "hit" if value == "hit" else "keep"
        return unknown

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CrystalRule:
        names = ("kind", "k", "threshold", "operating_point", "unknown")
        return cls(**{k: data[k] for k in names if k in data})

    def to_dict(self) -> dict[str, Any]:
        """As stored with each score; `unknown` only when set (older records stay equal)."""
        data = asdict(self)
        if self.unknown == "keep":
            del data["unknown"]
        return data

    def __str__(self) -> str:
        option = ",unknown=hit" if self.unknown == "hit" else ""
        if self.kind == "top_k":
            return f"top_k:{self.k}{option}"
        if self.operating_point:
            return f"threshold:op={self.operating_point}{option}"
        return ("threshold" if self.threshold is None else f"threshold:{self.threshold:g}") + option


@dataclass(frozen=True)
class Decision:
    hit: bool
    p_crystal: float
    rule: dict[str, Any]
    band: Band | None = None  # the Unknown band (scoring.confidence); None: uncalibrated


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
    unknown_below: float | None = None,
) -> Decision:
    """Apply a rule to one image's probabilities; the stored rule records what was used,
    with the card's `unknown_below` when the model is calibrated (its band derives from it)."""
    p = p_crystal(probabilities)
    used = rule.to_dict()
    if rule.kind == "top_k":
        hit = _top_k_hit(probabilities, rule.k)
    else:
        threshold = _resolve_threshold(rule, operating_points or {})
        used["threshold"] = threshold
        hit = p >= threshold
    if unknown_below is None:
        return Decision(hit, p, used)
    used["unknown_below"] = unknown_below
    called = band(probabilities, unknown_below)
    return Decision(hit or (rule.unknown == "hit" and called == UNKNOWN), p, used, called)
