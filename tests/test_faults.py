"""Faults in the scale-out stack: the database or the broker restarted while images arrive
and are scored. Each test restarts only a server it started itself (a private PostgreSQL
from initdb, a private Redis on another port), never the machine's shared ones.

The stack is the production one: a watcher and the dispatcher in this process (as
`marco-svc watch`), two `marco-svc worker` processes, PostgreSQL, Redis.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from marco_svc.config import load_settings
from marco_svc.db.models import Image
from marco_svc.runtime import Runtime, open_runtime
from marco_svc.service import Service
from tests.conftest import _empty_tables
from tests.helpers import jpeg_bytes, wait_for
from tests.test_scoring_service import register_active
from tests.test_watch import FAST
from tests.workers import (
    REDIS_URL,
    PrivatePostgres,
    PrivateRedis,
    broker_settings,
    score_count,
    scores_per_image,
    workers,
)

pytestmark = [pytest.mark.celery, pytest.mark.slow]

IMAGES = 240
FOLDER = "FAULT_2024-05-01_RI-9-3drop"
NAMES = [
    f"FAULT_{col:02d}{row}_{drop}.jpg"
    for row in "ABCDEFGHIJKLMNOP"
    for col in range(1, 25)
    for drop in (1, 2, 3)
][:IMAGES]


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    yield server
    server.close()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    yield server
    server.stop()


def stack_runtime(database_url: str, broker_url: str, tmp_path: Path, **changes: object) -> Runtime:
    settings = load_settings(env={}, data_dir=tmp_path / "data", database_url=database_url)
    return open_runtime(broker_settings(settings, broker_url, **{**FAST, **changes}))


def image_count(runtime: Runtime) -> int:
    with runtime.db.session() as session:
        return session.scalar(select(func.count()).select_from(Image))


def failed_images(runtime: Runtime) -> list[str]:
    with runtime.db.session() as session:
        return list(session.scalars(select(Image.error).where(Image.status == "failed")))


def arrive_while(fault: Callable[[], None], root: Path, at: int) -> None:
    """Write the images into the watched folder, ~40 a second, with `fault` after `at`."""
    folder = root / FOLDER
    folder.mkdir(parents=True)
    stop = threading.Event()
    for seed, name in enumerate(NAMES):
        if seed == at:
            fault()
        (folder / name).write_bytes(jpeg_bytes(48, 40, seed=seed))
        stop.wait(0.025)


def run_stack_through(
    runtime: Runtime, tiny_model: Path, tmp_path: Path, fault: Callable[[], None]
) -> str:
    """Watcher + dispatcher here, two workers; images arrive and `fault` strikes midway;
    then every image must be stored once and scored once, none failed. Returns the
    workers' logs."""
    register_active(runtime, tiny_model)
    root = tmp_path / "imager"
    root.mkdir()
    service = Service.assemble(runtime, [root])
    with workers(runtime.settings, 2, tmp_path / "logs") as started, service:
        arrive_while(fault, root, at=IMAGES // 3)
        wait_for(lambda: image_count(runtime) == IMAGES, 180, "every image stored")
        wait_for(lambda: score_count(runtime) == IMAGES, 180, "every image scored")
        assert service.watcher is not None and service.watcher.alive()
    assert failed_images(runtime) == []
    per_image = scores_per_image(runtime)
    assert len(per_image) == IMAGES and set(per_image.values()) == {1}
    return "\n".join(worker.text().split(" ready.", 1)[-1] for worker in started)


def test_postgres_restarted_during_ingest_and_scoring(
    private_postgres: PrivatePostgres, tiny_model: Path, tmp_path: Path
) -> None:
    runtime = stack_runtime(private_postgres.url, REDIS_URL, tmp_path)
    restarted = []

    def restart() -> None:
        wait_for(lambda: score_count(runtime) > 0, 120, "scoring under way")
        private_postgres.stop()
        threading.Timer(3.0, lambda: restarted.append(private_postgres.start())).start()

    try:
        logs = run_stack_through(runtime, tiny_model, tmp_path, restart)
    finally:
        wait_for(lambda: restarted, 60, "the restart")
        runtime.close()
    assert "retry: Retry in" in logs and "OperationalError" in logs  # the outage was felt


@pytest.mark.postgres
def test_broker_restarted_with_its_queue_lost(
    private_redis: PrivateRedis, postgres_url: str, tiny_model: Path, tmp_path: Path
) -> None:
    _empty_tables(postgres_url)
    # the private Redis keeps nothing: queued tasks die with it; the dispatcher sends the
    # images still unscored again after dispatch_again_seconds
    runtime = stack_runtime(postgres_url, private_redis.url, tmp_path, dispatch_again_seconds=5.0)

    def restart() -> None:
        wait_for(lambda: score_count(runtime) > 0, 120, "scoring under way")
        private_redis.restart(down_seconds=3.0)

    try:
        logs = run_stack_through(runtime, tiny_model, tmp_path, restart)
    finally:
        runtime.close()
    assert "Connection" in logs  # the workers lost the broker (and reconnected)
