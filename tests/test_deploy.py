"""The deployment files stay in step with the code."""

from __future__ import annotations

import configparser
from pathlib import Path

from marco_svc.cli import cli
from marco_svc.config import load_settings
from marco_svc.scoring.lab_rules import LabRules

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_example_configuration_loads() -> None:
    settings = load_settings(DEPLOY / "marco-svc.toml.example", env={})
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert len(settings.watch_roots) == 2 and settings.api_tokens == ["change-me"]
    rules = LabRules.parse(settings.crystal_rule, settings.lab_rules)
    assert str(rules.for_barcode("HWI-0001")) == "top_k:3"


def test_systemd_unit_runs_real_commands() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(DEPLOY / "marco-svc.service")
    service = unit["Service"]
    for key in ("ExecStartPre", "ExecStart"):
        words = service[key].split()
        assert words[0].endswith("/marco-svc")
        group = cli
        for word in words[1:]:
            group = group.commands[word] if hasattr(group, "commands") else group
        assert group.name == words[-1]
    assert service["KillSignal"] == "SIGTERM"
