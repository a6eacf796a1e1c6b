"""A newcomer's first commands, run as a user would: the same environment, one data folder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_cli, write_jpeg


def user_env(home: Path) -> dict[str, str]:
    """A user with no marco-svc settings at all: only their per-user folders."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARCO_")}
    return {
        **env,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
    }


@pytest.mark.slow
def test_demo_then_plates_list_shows_the_demo_plate(tmp_path: Path) -> None:
    env = user_env(tmp_path)
    demo = run_cli("demo", "--json", "--image-size", "64x77", "--wells", "96", env=env)
    assert demo.returncode == 0, demo.stderr
    assert "oneDNN" not in demo.stderr and "absl" not in demo.stderr, "TensorFlow chatter"
    barcode = json.loads(demo.stdout)["barcode"]
    plates = run_cli("plates", "list", "--json", env=env)
    assert plates.returncode == 0, plates.stderr
    assert barcode in {row["barcode"] for row in json.loads(plates.stdout)}
    settings = {
        r["name"]: r["value"] for r in json.loads(run_cli("settings", "--json", env=env).stdout)
    }
    assert settings["data_dir"] == str(tmp_path / "data" / "marco-svc")
    assert settings["database_url"].endswith("marco-svc/marco.sqlite3")


def test_serve_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_cli("serve", "--port", str(port), env=user_env(tmp_path))
    assert done.returncode != 0
    assert done.stderr.strip() == f"Error: port {port} is in use on 127.0.0.1"


@pytest.mark.slow
def test_piping_scores_into_head_is_quiet(tmp_path: Path) -> None:
    for n in range(40):
        write_jpeg(tmp_path / "drops" / f"{n}.jpg", seed=n)
    command = f"{sys.executable} -m marco_svc score --batch-size 2 {tmp_path / 'drops'} | head -1"
    done = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, timeout=300,
        env={**user_env(tmp_path), "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert json.loads(done.stdout)["model"] == "default:1"
    assert done.stderr == ""
