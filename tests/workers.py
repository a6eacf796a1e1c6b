"""Helpers for the scale-out tests: real `marco-svc worker` processes, images to score, and
private PostgreSQL and Redis servers that a test may stop and restart (never the shared ones).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select

from imager_adapters.record import ImageRecord
from marco_svc.config import Settings
from marco_svc.db.models import Score
from marco_svc.ingest import ingest
from marco_svc.runtime import Runtime
from tests.helpers import ROOT, wait_for, write_jpeg
from tests.test_watch_cli import free_port

REDIS_URL = os.environ.get("MARCO_TEST_REDIS", "redis://127.0.0.1:6379/0")
SCORED_LINE = re.compile(r"scored (\d+) of (\d+) images")
STARTED_LINE = re.compile(r"task \S+: \d+ images to score")


def broker_settings(settings: Settings, broker_url: str = REDIS_URL, **changes: object) -> Settings:
    """The settings with a broker and a queue of this test's own."""
    defaults: dict[str, object] = {
        "broker_url": broker_url,
        "broker_queue": f"test-{uuid.uuid4().hex[:10]}",
        "scoring_artifact": "tflite-fp32",
        "scoring_threads": 1,
        "heatmaps_for_hits": False,
    }
    return replace(settings, **{**defaults, **changes})


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment a worker process needs to act on these settings."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MARCO_CONFIG": "",
        "MARCO_DATA_DIR": str(settings.resolved_data_dir),
        "MARCO_DATABASE_URL": settings.resolved_database_url,
        "MARCO_BROKER_URL": settings.broker_url,
        "MARCO_BROKER_QUEUE": settings.broker_queue,
        "MARCO_BROKER_VISIBILITY_TIMEOUT": str(settings.broker_visibility_timeout),
        "MARCO_SCORING_ARTIFACT": settings.scoring_artifact,
        "MARCO_SCORING_THREADS": str(settings.scoring_threads),
        "MARCO_HEATMAPS_FOR_HITS": str(settings.heatmaps_for_hits).lower(),
        "MARCO_CRYSTAL_RULE": settings.crystal_rule,
        "MARCO_LOG_LEVEL": "INFO",
    }


class Worker:
    """One `marco-svc worker` process, its log in a file."""

    def __init__(self, settings: Settings, name: str, log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "marco_svc", "worker", f"--hostname={name}@test"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=worker_env(settings),
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> None:
        wait_for(
            lambda: " ready." in self.text() or self.process.poll() is not None,
            timeout,
            f"worker {self.name} ready",
        )
        assert self.process.poll() is None, self.text()[-3000:]

    def scored(self) -> int:
        """Images this worker's tasks scored, from its log lines."""
        return sum(int(m.group(1)) for m in SCORED_LINE.finditer(self.text()))

    def busy(self) -> bool:
        """Whether the worker is inside a scoring task now (started, not finished)."""
        text = self.text()
        return len(STARTED_LINE.findall(text)) > len(SCORED_LINE.findall(text))

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)


@contextmanager
def workers(settings: Settings, count: int, log_dir: Path) -> Iterator[list[Worker]]:
    """`count` worker processes, ready; stopped (SIGTERM) at the end."""
    log_dir.mkdir(parents=True, exist_ok=True)
    started = [Worker(settings, f"w{n}", log_dir) for n in range(1, count + 1)]
    try:
        for worker in started:
            worker.wait_ready()
        yield started
    finally:
        for worker in started:
            worker.stop()


def add_images(
    runtime: Runtime, folder: Path, count: int, width: int = 96, height: int = 80
) -> list[int]:
    """`count` (at most 1,152) JPEGs ingested as the drops of one 384-well plate."""
    ids = []
    for i in range(count):
        row, column, drop = "ABCDEFGHIJKLMNOP"[i // 72], i // 3 % 24 + 1, i % 3 + 1
        path = write_jpeg(folder / f"{i}.jpg", seed=i, width=width, height=height)
        record = ImageRecord(path, "SCALE-1", f"{row}{column}", drop, datetime(2024, 3, 1), "RI-2")
        result = ingest(runtime.db, record)
        assert result.outcome == "created", result
        ids.append(result.image_id)
    runtime.scoring_queue.put(ids)
    return ids


def score_count(runtime: Runtime) -> int:
    with runtime.db.session() as session:
        return session.scalar(select(func.count()).select_from(Score))


def scores_per_image(runtime: Runtime) -> dict[int, int]:
    with runtime.db.session() as session:
        rows = session.execute(select(Score.image_id, func.count()).group_by(Score.image_id))
        return dict(rows.all())


def _as_postgres_user() -> list[str]:
    """Run PostgreSQL's programs as `postgres` when we are root (it refuses root)."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)), None
    )
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed")
    return str(found)


class PrivatePostgres:
    """A PostgreSQL server of the test's own, from `initdb` in a temporary folder."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="marco-pg-"))
        self.data, self.port = self.root / "data", free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")
        self.start()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*_as_postgres_user(), *args], check=True, capture_output=True, timeout=120)

    def _ctl(self, *args: str) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off"
        )
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "-o", options, *args)

    def start(self) -> None:
        self._ctl("-l", str(self.root / "log"), "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A Redis server of the test's own on another port; it keeps nothing on disk, so a
    restart loses every queued task (the worst case for the broker)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for(self._answers, 30, "the private Redis")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)
            self.process = None

    def restart(self, down_seconds: float = 2.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()
