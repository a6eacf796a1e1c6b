"""Which crystal rule applies to a plate: the longest matching barcode prefix, else the default."""

from __future__ import annotations

from dataclasses import dataclass, field

from marco_svc.scoring.rules import CrystalRule, RuleError


@dataclass(frozen=True)
class LabRules:
    default: CrystalRule
    by_prefix: dict[str, CrystalRule] = field(default_factory=dict)

    @classmethod
    def parse(cls, default: str, per_lab: str = "") -> LabRules:
        """From the settings: `crystal_rule` and `lab_rules` ('PREFIX=RULE; PREFIX=RULE')."""
        by_prefix: dict[str, CrystalRule] = {}
        for part in filter(None, (p.strip() for p in per_lab.split(";"))):
            prefix, sep, rule = part.partition("=")
            if not sep or not prefix.strip():
                raise RuleError(f"lab rule {part!r} is not like PREFIX=RULE")
            by_prefix[prefix.strip()] = CrystalRule.parse(rule)
        return cls(CrystalRule.parse(default), by_prefix)

    def for_barcode(self, barcode: str | None) -> CrystalRule:
        matches = [p for p in self.by_prefix if barcode and barcode.startswith(p)]
        return self.by_prefix[max(matches, key=len)] if matches else self.default
