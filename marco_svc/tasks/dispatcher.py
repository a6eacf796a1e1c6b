"""The dispatcher: sends the images waiting to be scored to the Celery workers.

It walks the pending images of the model that scores now in id order, a page at a time,
and sends them in tasks of `scoring_batch_size`, keeping at most `dispatch_max_queued`
tasks waiting in the broker, so back-scoring an archive of millions never floods it. New
images have higher ids, so the walk meets them within `poll_seconds` (at once when ingest
in this process wakes it). When the walk reaches the end it starts again from the lowest
id, but not before `dispatch_again_seconds` have passed since the last start: an image
still pending by then lost its task (or the broker did) and is sent again; the tasks are
idempotent. Activating another model version starts a new walk at once.

One dispatcher per deployment is enough (`marco-svc watch` or `serve` runs it); a second
one only sends some images twice, which the workers skip.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import Celery

from marco_svc import registry
from marco_svc.errors import first_line
from marco_svc.runtime import Runtime
from marco_svc.scoring.store import pending_ids_after
from marco_svc.tasks.app import SCORE_IMAGES, celery_app
from marco_svc.work_queue import WakeUpQueue

log = logging.getLogger(__name__)


class Dispatcher:
    """A daemon thread that keeps the workers fed with the images left to score."""

    def __init__(
        self, runtime: Runtime, app: Celery | None = None, poll_seconds: float = 2.0
    ) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.app = app or celery_app(settings)
        self.queue_name = settings.broker_queue
        self.batch = max(1, settings.scoring_batch_size)
        self.max_queued = max(1, settings.dispatch_max_queued)
        self.again_seconds = settings.dispatch_again_seconds
        self.poll_seconds = poll_seconds
        self.wake = (
            runtime.scoring_queue if isinstance(runtime.scoring_queue, WakeUpQueue) else None
        )
        self.sent_images = 0
        self.sent_tasks = 0
        self.last_error: str | None = None
        self._version: int | None = None
        self._cursor = 0
        self._walk_started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="marco-dispatcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self.wake is not None:
            self.wake.wake()
        self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        return {
            "running": self._thread.is_alive(),
            "broker_queue": self.queue_name,
            "sent_images": self.sent_images,
            "sent_tasks": self.sent_tasks,
            "last_error": self.last_error,
        }

    def queued(self) -> int:
        """Tasks waiting in the broker queue now."""
        with self.app.connection_for_read() as connection:
            channel = connection.default_channel
            try:
                return channel.queue_declare(queue=self.queue_name, passive=True).message_count
            except connection.channel_errors:  # no such queue yet (Redis: none while empty)
                return 0

    def tick(self) -> int:
        """Send what fits in the broker now; returns how many images were sent."""
        version = registry.scoring_version_id(self.runtime.settings, self.runtime.db)
        if version is None:
            self.last_error = "no model can score (none active, none shipped)"
            return 0
        now = time.monotonic()
        if version != self._version:
            self._version, self._cursor, self._walk_started = version, 0, now
        room = self.max_queued - self.queued()
        sent = 0
        while room > 0:
            with self.runtime.db.session() as session:
                ids = pending_ids_after(session, version, self._cursor, room * self.batch)
            if not ids:
                if now - self._walk_started >= self.again_seconds:
                    self._cursor, self._walk_started = 0, now
                break
            for start in range(0, len(ids), self.batch):
                chunk = ids[start : start + self.batch]
                self.app.send_task(SCORE_IMAGES, args=[chunk], queue=self.queue_name)
                self._cursor = chunk[-1]
                sent += len(chunk)
                self.sent_tasks += 1
                room -= 1
        self.sent_images += sent
        self.last_error = None
        return sent

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # the database or the broker is away: report, retry
                if self.last_error is None:
                    log.warning("dispatching paused: %s", first_line(exc))
                self.last_error = f"{type(exc).__name__}: {first_line(exc)}"
            if self.wake is not None:
                self.wake.wait(self.poll_seconds)
            else:
                self._stop.wait(self.poll_seconds)
