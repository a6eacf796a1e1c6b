"""The console script as a user runs it: real plate, idempotence, one-line errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tests.conftest import REAL_PLATE, needs_real_plate
from tests.helpers import cli_json, run_cli, write_jpeg

WELLS = [f"{row}{col}" for row in "ABCDEFGH" for col in range(1, 13)]


@needs_real_plate
def test_ingest_real_plate_twice(cli_env: dict[str, str]) -> None:
    first = cli_json("ingest", str(REAL_PLATE), env=cli_env)
    assert first["counts"] == {"created": 96}
    plates = cli_json("plates", "list", env=cli_env)
    summary = [(p["barcode"], p["image_count"], p["plate_type"]) for p in plates]
    assert summary == [("90j8", 96, "96x2")]
    detail = cli_json("plates", "show", "90j8", env=cli_env)
    assert sorted(i["well"] for i in detail["images"]) == sorted(WELLS)
    assert {i["drop"] for i in detail["images"]} == {1}
    assert {i["inspection"]["imager"] for i in detail["images"]} == {"RI1000-0081"}
    assert {i["inspection"]["imaged_at"] for i in detail["images"]} == {"2018-04-11T00:00:00"}
    assert {i["status"] for i in detail["images"]} == {"new"}
    assert all("score" in i for i in detail["images"])

    again = cli_json("ingest", str(REAL_PLATE), env=cli_env)
    assert again["counts"] == {"duplicate": 96}
    assert cli_json("plates", "show", "90j8", env=cli_env) == detail


def test_failed_files_are_listed_with_their_reason(cli_env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "P9_2024-01-02_RI54-0001-1drop"
    write_jpeg(folder / "P9_01A_1.jpg")
    (folder / "P9_02A_1.jpg").write_bytes(b"")
    write_jpeg(folder / "holiday-photo.jpg")
    done = run_cli("ingest", str(tmp_path), env=cli_env)
    assert done.returncode == 3, done.stderr  # some files failed; the others were stored
    assert "1 new, 0 already stored, 2 failed" in done.stdout
    failed = cli_json("images", "list", "--status", "failed", env=cli_env)
    reasons = {Path(row["path"]).name: row["error"] for row in failed}
    assert reasons == {
        "P9_02A_1.jpg": "empty file (0 bytes)",
        "holiday-photo.jpg": "unknown naming scheme: no imager adapter recognises "
        "'holiday-photo.jpg'",
    }
    assert len(cli_json("images", "list", "--status", "new", env=cli_env)) == 1


def one_line_error(done, fragment: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert fragment in lines[0]


def test_missing_path_is_a_one_line_error(cli_env: dict[str, str], tmp_path: Path) -> None:
    one_line_error(run_cli("ingest", str(tmp_path / "nope"), env=cli_env), "no such file")


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("not a url", "malformed database URL"),
        ("mysql://root@localhost/x", "unsupported database"),
        ("postgresql+psycopg://nobody@127.0.0.1:1/none", "connection"),
    ],
)
def test_bad_database_url_is_a_one_line_error(tmp_path: Path, url: str, fragment: str) -> None:
    env = {"MARCO_DATABASE_URL": url, "MARCO_DATA_DIR": str(tmp_path)}
    one_line_error(run_cli("plates", "list", env=env), fragment)


# Root reads every folder; without these capabilities it obeys permissions like anyone.
AS_UNPRIVILEGED = (
    ("setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--")
    if os.geteuid() == 0
    else ()
)


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"), reason="needs setpriv")
def test_unreadable_folder_is_a_one_line_error(cli_env: dict[str, str], tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    write_jpeg(locked / "x.jpg")
    locked.chmod(0o000)
    try:
        done = run_cli("ingest", str(locked), env=cli_env, prefix=AS_UNPRIVILEGED)
        one_line_error(done, "cannot read folder")
    finally:
        locked.chmod(0o755)


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for name, command in group.commands.items():
        paths.append((*prefix, name))
        if isinstance(command, click.Group):
            paths.extend(_command_paths(command, (*prefix, name)))
    return paths


def test_every_command_has_help() -> None:
    from marco_svc.cli import cli

    done = run_cli("--help")
    assert done.returncode == 0 and "Usage:" in done.stdout
    paths = _command_paths(cli)
    assert {("train",), ("evaluate",), ("models", "export"), ("labels", "export")} <= set(paths)
    for path in paths:
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, path


def test_unknown_plate_is_a_one_line_error(cli_env: dict[str, str]) -> None:
    one_line_error(run_cli("plates", "show", "NOPE", env=cli_env), "no plate with barcode")


def test_plates_show_in_words(cli_env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "T1_2024-01-02_RI54-0001-1drop"
    write_jpeg(folder / "T1_01A_1.jpg")
    write_jpeg(folder / "T1_02A_1.jpg", seed=1)
    assert run_cli("ingest", str(tmp_path), env=cli_env).returncode == 0
    done = run_cli("plates", "show", "T1", env=cli_env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "plate T1 (96x1), 2 images"
    rows = [line.split() for line in lines[1:]]
    assert [row[1:4] for row in rows] == [["A1", "d1", "new"], ["A2", "d1", "new"]]
    assert all(row[0].isdigit() for row in rows), "each line starts with the image id"
