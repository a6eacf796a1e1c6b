"""Settings: environment over TOML file over defaults; bad values are clear errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from marco_svc.config import Settings, SettingsError, load_settings


def test_defaults_need_no_configuration(tmp_path: Path) -> None:
    settings = load_settings(env={"MARCO_DATA_DIR": str(tmp_path)})
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'marco.sqlite3'}"
    assert settings.port == 8080


def test_environment_over_file_over_defaults(tmp_path: Path) -> None:
    config = tmp_path / "marco.toml"
    config.write_text('port = 9000\nhost = "0.0.0.0"\nauto_upgrade = false\n')
    settings = load_settings(config, env={"MARCO_PORT": "9100"})
    assert (settings.port, settings.host, settings.auto_upgrade) == (9100, "0.0.0.0", False)


def test_file_may_use_a_marco_table(tmp_path: Path) -> None:
    config = tmp_path / "marco.toml"
    config.write_text('[marco]\ndatabase_url = "postgresql+psycopg://x@h/db"\n')
    settings = load_settings(env={"MARCO_CONFIG": str(config)})
    assert settings.resolved_database_url == "postgresql+psycopg://x@h/db"


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        ("nonsense = 1\n", {}, "unknown setting 'nonsense'"),
        ("port = [\n", {}, "config file"),
        ("", {"MARCO_PORT": "eighty"}, "setting port"),
        ("", {"MARCO_AUTO_UPGRADE": "maybe"}, "expected true/false"),
    ],
)
def test_bad_settings_are_clear_errors(
    tmp_path: Path, content: str, env: dict[str, str], message: str
) -> None:
    config = tmp_path / "marco.toml"
    config.write_text(content)
    with pytest.raises(SettingsError, match=message):
        load_settings(config, env=env)


def test_every_setting_is_described() -> None:
    rows = Settings().describe()
    assert all(row["help"] and row["env"].startswith("MARCO_") for row in rows)
    assert {"data_dir", "database_url", "port"} <= {row["name"] for row in rows}


def test_settings_show_what_is_in_use(tmp_path: Path) -> None:
    url = "postgresql+psycopg://marco:s3cret@db.example/marco"
    rows = {r["name"]: r["value"] for r in load_settings(env={}, data_dir=tmp_path).describe()}
    assert rows["data_dir"] == str(tmp_path)
    assert rows["database_url"] == f"sqlite:///{tmp_path / 'marco.sqlite3'}"
    pg = load_settings(env={}, data_dir=tmp_path, database_url=url).describe()
    assert {r["name"]: r["value"] for r in pg}["database_url"] == (
        "postgresql+psycopg://marco:***@db.example/marco"
    )


def test_list_settings_from_the_environment_and_toml(tmp_path: Path) -> None:
    env = {
        "MARCO_WATCH_ROOTS": f"/a{os.pathsep}/b",
        "MARCO_IMAGER_PATTERNS": '["homebuilt", {"name": "x", "regex": "(?:a)"}]',
    }
    settings = load_settings(env=env)
    assert settings.watch_roots == ["/a", "/b"]
    assert settings.imager_patterns[0] == "homebuilt"
    assert json.loads(settings.imager_patterns[1]) == {"name": "x", "regex": "(?:a)"}
    config = tmp_path / "marco.toml"
    config.write_text(
        "imager_patterns = ['rigaku-crystaltrak', {preset = 'homebuilt', imager = 'g1'}]\n"
        "watch_settle_seconds = 1\n"
    )
    settings = load_settings(config, env={})
    assert json.loads(settings.imager_patterns[1]) == {"preset": "homebuilt", "imager": "g1"}
    assert settings.watch_settle_seconds == 1.0
    with pytest.raises(SettingsError, match="not a JSON list"):
        load_settings(env={"MARCO_WATCH_ROOTS": "[oops"})


def test_api_tokens_are_not_printed() -> None:
    rows = {row["name"]: row for row in Settings(api_tokens=["s3cret"]).describe()}
    assert rows["api_tokens"]["value"] == ["***"]
    assert "s3cret" not in json.dumps(rows)


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = [line for line in readme.splitlines() if line.startswith("| ")]
    for entry in Settings().describe():
        assert any(entry["env"] in line for line in table), f"{entry['env']} not in README"
