"""The deployment files stay in step with the code."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path, PureWindowsPath
from xml.etree import ElementTree

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


def _options(words: list[str]) -> dict[str, str]:
    """`--name value` pairs of a command line (every edge option takes a value)."""
    options = dict(zip(words[::2], words[1::2], strict=True))
    for name, value in options.items():
        assert name.startswith("--") and not value.startswith("--"), (name, value)
    return options


def test_edge_services_run_marco_svc_edge_with_the_token_from_the_environment() -> None:
    """The systemd unit and the WinSW service name the same `marco-svc edge` command line."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(DEPLOY / "edge" / "marco-svc-edge.service")
    service = unit["Service"]
    words = shlex.split(service["ExecStart"])
    assert words[0].startswith("/") and words[0].endswith("/bin/marco-svc")
    assert words[1] == "edge"
    linux = _options(words[2:])
    assert {"--watch", "--server"} <= set(linux) <= {"--watch", "--server", "--model", "--state"}
    assert linux["--state"] == f"/var/lib/{service['StateDirectory']}"
    assert service["EnvironmentFile"].lstrip("-").startswith("/etc/")  # MARCO_EDGE_TOKEN=...
    assert service["User"] not in {"", "root"} and service["Restart"] == "always"
    assert service["ProtectSystem"] == "strict"  # the watched folder is read only

    config = ElementTree.parse(DEPLOY / "edge" / "windows" / "marco-svc-edge.xml").getroot()
    assert config.tag == "service" and config.findtext("id") == "marco-svc-edge"
    assert PureWindowsPath(config.findtext("executable", "")).name == "marco-svc.exe"
    words = shlex.split(config.findtext("arguments", ""))
    assert words[0] == "edge"
    assert set(_options(words[1:])) == set(linux)
    env = {e.get("name"): e.get("value") for e in config.iter("env")}
    assert env.get("MARCO_EDGE_TOKEN")
    assert config.find("onfailure").get("action") == "restart"
    assert config.find("log").get("mode") == "roll-by-size"
