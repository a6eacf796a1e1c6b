"""Scale-out on a real Redis broker with real `marco-svc worker` processes.

The dispatcher runs here (as in `marco-svc watch`); the workers are separate processes
that take the tasks from Redis and write to the same PostgreSQL database.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from marco_svc.config import Settings, load_settings
from marco_svc.db.models import Heatmap, Image, Score
from marco_svc.runtime import Runtime, open_runtime
from marco_svc.service import Service
from marco_svc.tasks.dispatcher import Dispatcher
from tests.conftest import _empty_tables
from tests.helpers import api_client, wait_for
from tests.test_scoring_service import register_active
from tests.workers import (
    REDIS_URL,
    add_images,
    broker_settings,
    score_count,
    scores_per_image,
    workers,
)

pytestmark = [pytest.mark.celery, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def pg_settings(postgres_url: str, tmp_path: Path) -> Settings:
    _empty_tables(postgres_url)
    return load_settings(env={}, data_dir=tmp_path / "data", database_url=postgres_url)


def open_broker_runtime(settings: Settings, **changes: object) -> Runtime:
    return open_runtime(broker_settings(settings, **changes))


@pytest.fixture
def broker_runtime(pg_settings: Settings) -> Iterator[Runtime]:
    runtime = open_broker_runtime(pg_settings)
    yield runtime
    runtime.close()


def unacked_of(queue: str) -> int:
    """Messages of `queue` a worker took and has not acknowledged (kombu's Redis layout)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return sum(json.loads(value)[2] == queue for value in client.hvals("unacked"))
    finally:
        client.close()


def test_two_workers_score_1000_images_each_exactly_once(
    broker_runtime: Runtime, tiny_model: Path, tmp_path: Path
) -> None:
    register_active(broker_runtime, tiny_model)
    ids = add_images(broker_runtime, tmp_path / "images", 1000)
    with workers(broker_runtime.settings, 2, tmp_path) as (one, two):
        dispatcher = Dispatcher(broker_runtime, poll_seconds=0.5)
        dispatcher.start()
        try:
            wait_for(lambda: score_count(broker_runtime) == 1000, 300, "1,000 scores")
        finally:
            dispatcher.stop()
        wait_for(lambda: one.scored() + two.scored() == 1000, 30, "the workers' last log lines")
        # each image was scored by one task only: the workers' counts add up to 1,000
        assert one.scored() > 0 and two.scored() > 0, (one.scored(), two.scored())
    per_image = scores_per_image(broker_runtime)
    assert sorted(per_image) == sorted(ids) and set(per_image.values()) == {1}
    with broker_runtime.db.session() as session:
        positions = session.scalar(select(func.count(func.distinct(Score.feed_seq))))
        statuses = set(session.scalars(select(Image.status)))
    assert positions == 1000 and statuses == {"scored"}
    assert dispatcher.status()["sent_images"] == 1000 and dispatcher.status()["last_error"] is None


def test_a_worker_killed_mid_task_loses_nothing(
    pg_settings: Settings, tiny_model: Path, tmp_path: Path
) -> None:
    # only the broker can bring the killed task back: the dispatcher sends each image once
    runtime = open_broker_runtime(
        pg_settings, broker_visibility_timeout=3.0, dispatch_again_seconds=3600.0
    )
    queue = runtime.settings.broker_queue
    try:
        register_active(runtime, tiny_model)
        # large frames: a task takes long enough to be killed in the middle of it
        ids = add_images(runtime, tmp_path / "images", 320, width=1600, height=1200)
        dispatcher = Dispatcher(runtime, poll_seconds=0.5)
        with workers(runtime.settings, 1, tmp_path) as (first,):
            dispatcher.start()
            wait_for(lambda: score_count(runtime) > 0 and first.busy(), 120, "a task under way")
            first.kill()  # SIGKILL in the middle of a task
        done_by_first = first.scored()
        dispatcher.stop()
        assert score_count(runtime) < 320 and unacked_of(queue) == 1
        assert dispatcher.status()["sent_images"] == 320
        with workers(runtime.settings, 1, tmp_path / "second") as (second,):
            wait_for(lambda: score_count(runtime) == 320, 120, "every image, the lost task too")
            wait_for(lambda: done_by_first + second.scored() == 320, 30, "the last log line")
        assert unacked_of(queue) == 0
        per_image = scores_per_image(runtime)
        assert sorted(per_image) == sorted(ids) and set(per_image.values()) == {1}
    finally:
        runtime.close()


def test_heatmaps_are_made_by_the_workers(
    pg_settings: Settings, tmp_path: Path, tiny_model: Path
) -> None:
    # every score a hit (threshold 0): each hit's heatmap is a task; one more is asked over HTTP
    runtime = open_broker_runtime(
        pg_settings, heatmaps_for_hits=True, crystal_rule="threshold:0.0", smoothgrad_samples=2
    )
    try:
        model = register_active(runtime, tiny_model)
        (image_id,) = add_images(runtime, tmp_path / "images", 1)
        service = Service.assemble(runtime, watch_roots=[])
        client = api_client(service, "scientist")
        with workers(runtime.settings, 1, tmp_path / "w"), service:
            wait_for(lambda: heatmap_count(runtime) == 1, 300, "the hit's heatmap")
            made = heatmap_labels(runtime)
            other = next(c for c in next(iter(model.card.heads.values())) if c not in made)
            url = f"/api/v1/images/{image_id}/heatmap.png?class={other}"
            first = client.get(url)
            assert first.status_code == 202 and int(first.headers["Retry-After"]) >= 1
            wait_for(lambda: heatmap_count(runtime) == 2, 300, "the asked-for heatmap")
            answer = client.get(url)
            png = answer.get_data()
            answer.close()
        assert answer.status_code == 200 and png.startswith(b"\x89PNG")
        assert answer.headers["X-Heatmap-Class"] == other
    finally:
        runtime.close()


def heatmap_labels(runtime: Runtime) -> list[str]:
    with runtime.db.session() as session:
        return list(session.scalars(select(Heatmap.class_label)))


def heatmap_count(runtime: Runtime) -> int:
    with runtime.db.session() as session:
        return session.scalar(select(func.count()).select_from(Heatmap))
