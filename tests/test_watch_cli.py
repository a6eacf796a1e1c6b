"""`marco-svc watch` and `serve` with watch_roots, as real processes stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from marco_svc.db.models import Image
from marco_svc.db.session import Database
from tests.helpers import ROOT, run_cli, wait_for, write_jpeg

# `runtime` migrates the test database first, so it can be counted while a process starts.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("runtime")]


@contextmanager
def service(*args: str, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """`python -m marco_svc ARGS` in the background; killed if the test leaves it running."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    full_env.pop("MARCO_DEBUG", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "marco_svc", *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)


def stop(process: subprocess.Popen) -> tuple[str, str]:
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return out, err


def count_images(url: str) -> int:
    db = Database(url)
    try:
        with db.session() as session:
            return session.scalar(select(func.count()).select_from(Image))
    finally:
        db.dispose()


def test_watch_ingests_until_sigterm(cli_env: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "imager"
    folder = root / "W1_2024-05-01_RI-1-1drop"
    write_jpeg(folder / "W1_01A_1.jpg", seed=1)  # there before the start: backfill
    env = {**cli_env, "MARCO_WATCH_SETTLE_SECONDS": "0.3"}
    with service("watch", str(root), env=env) as process:
        write_jpeg(folder / "W1_02A_1.jpg", seed=2)
        (folder / "W1_03A_1.jpg").write_bytes(b"")
        url = cli_env["MARCO_DATABASE_URL"]
        wait_for(lambda: count_images(url) == 3, what="3 images stored by the watch process")
        _, err = stop(process)
    assert "watching" in err and "stopped: 2 new, 0 already stored, 1 failed" in err
    assert "failed " in err and "empty file (0 bytes)" in err  # each failure is logged


def test_watch_refuses_a_file_or_missing_folder(cli_env: dict[str, str], tmp_path: Path) -> None:
    done = run_cli("watch", str(tmp_path / "nope"), env=cli_env)
    assert done.returncode != 0 and "no such file or folder" in done.stderr
    file = write_jpeg(tmp_path / "x.jpg")
    done = run_cli("watch", str(file), env=cli_env)
    assert done.returncode != 0 and "not a folder" in done.stderr
    done = run_cli("watch", str(tmp_path), "--adapter", "nope", env=cli_env)
    assert done.returncode != 0 and "no imager adapter named 'nope'" in done.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def healthz(port: int, token: str | None = None) -> dict | None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/healthz")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return json.load(answer)
    except (urllib.error.URLError, ConnectionError):
        return None


def test_serve_watches_the_configured_roots(cli_env: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "imager"
    root.mkdir()
    port = free_port()
    env = {
        **cli_env,
        "MARCO_WATCH_ROOTS": str(root),
        "MARCO_WATCH_SETTLE_SECONDS": "0.3",
        "MARCO_PORT": str(port),
    }
    with service("serve", env=env) as process:
        wait_for(lambda: healthz(port), what="the service to answer")
        write_jpeg(root / "S9_2024-05-01_RI-1-1drop" / "S9_01A_1.jpg")
        health = wait_for(
            lambda: (h := healthz(port)) and h["watcher"]["counts"].get("created") == 1 and h,
            what="the served watcher to store the file",
        )
        assert health["watcher"]["alive"] and "roots" not in health["watcher"], "admins only"
        admin = run_cli("tokens", "create", "--role", "admin", env=env).stdout.splitlines()[-1]
        roots = healthz(port, admin)["watcher"]["roots"]
        assert roots == [str(root.resolve())]
        out, err = stop(process)
    assert "marco-svc stopped" in out
    assert "watcher stopped" in err
    assert count_images(cli_env["MARCO_DATABASE_URL"]) == 1
