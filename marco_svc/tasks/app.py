"""The Celery app: broker settings and the two tasks, `marco.score_images` and `marco.heatmap`.

Every task is acknowledged late (after it ran) and given back when its worker dies, so a
killed worker's task is delivered again (on Redis after `broker_visibility_timeout`); the
jobs are idempotent (`scoring.jobs`), so a second delivery stores nothing twice. A task
that meets an unreachable database is retried with backoff, never dropped.

Producers (the dispatcher, the web processes) only `send_task` by name and never import
the task code; a worker process opens its runtime and model on its first task, after any
fork, so each child has its own database pool and interpreter.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import Celery, Task
from sqlalchemy.exc import DBAPIError

from marco_svc.config import Settings

log = logging.getLogger(__name__)

SCORE_IMAGES = "marco.score_images"
HEATMAP = "marco.heatmap"
NO_MODEL_RETRY_SECONDS = 30


def celery_app(settings: Settings) -> Celery:
    """A Celery app for the configured broker (producers and workers alike)."""
    if not settings.broker_url:
        raise ValueError("no broker configured (setting broker_url)")
    app = Celery("marco_svc", broker=settings.broker_url, set_as_current=False)
    visibility = max(1.0, settings.broker_visibility_timeout)
    app.conf.update(
        task_default_queue=settings.broker_queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_publish_retry=True,
        task_publish_retry_policy={
            "max_retries": 3,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 2.0,
        },
        broker_transport_options={
            "visibility_timeout": visibility,
            # look for the tasks of dead workers at least every 10 s (Redis)
            "unacked_restore_interval": max(1, min(10, int(visibility / 2))),
            "unacked_restore_throttle": 1,
        },
    )
    return app


class _WorkerState:
    """One worker process's runtime and scoring engine, opened on its first task."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._current: Any = None

    def current(self) -> Any:
        """The process's `jobs.CurrentEngine` (a fresh one in a forked child)."""
        with self._lock:
            if self._current is None or self._pid != os.getpid():
                from marco_svc.runtime import open_runtime
                from marco_svc.scoring.jobs import CurrentEngine

                self._current = CurrentEngine(open_runtime(self.settings, upgrade=False))
                self._pid = os.getpid()
            return self._current


def worker_app(settings: Settings) -> Celery:
    """The Celery app with the tasks registered, as `marco-svc worker` runs it."""
    app = celery_app(settings)
    state = _WorkerState(settings)
    retry_database = {
        "autoretry_for": (DBAPIError,),
        "retry_backoff": 1,
        "retry_backoff_max": 60,
        "retry_jitter": True,
        "max_retries": None,
    }

    @app.task(name=SCORE_IMAGES, bind=True, **retry_database)
    def score_images(task: Task, image_ids: list[int]) -> dict[str, int]:
        from marco_svc.scoring import jobs
        from marco_svc.scoring.engine import NoModel

        log.info("task %s: %d images to score", task.request.id, len(image_ids))
        current = state.current()
        try:
            engine = current.get()
        except NoModel as exc:
            raise task.retry(exc=exc, countdown=NO_MODEL_RETRY_SECONDS) from None
        done = jobs.score_images(engine, image_ids)
        log.info(
            "scored %d of %d images with %s (%d already scored or not scorable)",
            done.scored,
            len(image_ids),
            engine.model.ref,
            done.skipped,
        )
        for image_id in done.hits:
            task.app.send_task(HEATMAP, args=[image_id, engine.version_id, None])
        return {"scored": done.scored, "skipped": done.skipped}

    @app.task(name=HEATMAP, bind=True, **retry_database)
    def heatmap(
        task: Task,
        image_id: int,
        version_id: int,
        class_label: str | None,
        samples: int | None = None,
    ) -> None:
        """`samples`: the asker's smoothgrad_samples (its cache key), else this worker's."""
        from marco_svc.scoring import heatmaps, jobs

        runtime = state.current().runtime
        try:
            made = jobs.make_heatmap(runtime, image_id, version_id, class_label, samples)
        except heatmaps.HeatmapError as exc:  # the image's or the model's fault: no retry
            log.warning("no heatmap for image %s: %s", image_id, exc)
            return
        log.info(
            "heatmap of image %s (%s)%s",
            image_id,
            made.class_label,
            " was cached" if made.cached else "",
        )

    return app
