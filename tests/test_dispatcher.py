"""The dispatcher against a real Redis broker (no workers): back-pressure, walking on,
sending again after `dispatch_again_seconds`, and a new walk when a model is activated."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from marco_svc import registry
from marco_svc.config import Settings
from marco_svc.runtime import Runtime, open_runtime
from marco_svc.tasks.dispatcher import Dispatcher
from tests.nets_helpers import write_fake_model_folder
from tests.workers import add_images, broker_settings

pytestmark = pytest.mark.celery


@pytest.fixture
def broker_runtime(settings: Settings) -> Iterator[Runtime]:
    runtime = open_runtime(broker_settings(settings, dispatch_max_queued=3))
    yield runtime
    runtime.close()


def purge(dispatcher: Dispatcher) -> None:
    """What the workers would do: take every waiting task (here: throw it away)."""
    with dispatcher.app.connection_for_write() as connection:
        connection.default_channel.queue_purge(dispatcher.queue_name)


def activate_fake(runtime: Runtime, folder: Path, version: str) -> None:
    write_fake_model_folder(folder, "fake", version)
    model = registry.register(runtime.settings, folder, db=runtime.db)
    registry.activate(runtime.db, model.ref)


def test_the_dispatcher_keeps_the_broker_fed_but_never_flooded(
    broker_runtime: Runtime, tmp_path: Path
) -> None:
    activate_fake(broker_runtime, tmp_path / "m1", "1")
    add_images(broker_runtime, tmp_path / "images", 100)
    dispatcher = Dispatcher(broker_runtime)
    try:
        assert dispatcher.tick() == 48 and dispatcher.queued() == 3  # 3 tasks of 16, then full
        assert dispatcher.tick() == 0
        purge(dispatcher)
        assert dispatcher.tick() == 48 and dispatcher.tick() == 0
        purge(dispatcher)
        assert dispatcher.tick() == 4  # the walk reached the end: 100 images sent once each
        purge(dispatcher)
        assert dispatcher.tick() == 0  # nothing scored, but sent less than 600 s ago
        dispatcher.again_seconds = 0.0
        assert dispatcher.tick() == 0  # the walk starts again from the lowest id ...
        assert dispatcher.tick() == 48  # ... and sends what is still unscored once more
        purge(dispatcher)
        dispatcher.again_seconds = 600.0
        activate_fake(broker_runtime, tmp_path / "m2", "2")
        assert dispatcher.tick() == 48  # another version: a new walk at once
        assert dispatcher.status()["sent_images"] == 48 + 48 + 4 + 48 + 48
    finally:
        purge(dispatcher)


def test_without_a_model_the_dispatcher_says_so(broker_runtime: Runtime, tmp_path: Path) -> None:
    broker_runtime.settings = replace(broker_runtime.settings, model="nothing:9")
    add_images(broker_runtime, tmp_path / "images", 3)
    dispatcher = Dispatcher(broker_runtime)
    assert dispatcher.tick() == 0 and "no model" in (dispatcher.status()["last_error"] or "")
