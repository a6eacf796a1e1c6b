"""The background scorer inside `serve` and `watch` when no broker is configured: wakes on the
scoring queue, scores what the database says is pending for the active model (new images
first), and, when idle, makes the heatmaps of hits.

It holds its engine and makes heatmaps as the Celery workers do (`scoring.jobs`). The queue
only wakes it up; the database is the truth, so nothing is lost when the queue overflows or
the process restarts. Activating another model version makes it reload and rescore in the
background.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from marco_svc.runtime import Runtime
from marco_svc.scoring import heatmaps, jobs
from marco_svc.scoring.engine import NoModel, ScoringEngine
from marco_svc.scoring.store import pending_images
from marco_svc.work_queue import InProcessScoringQueue

log = logging.getLogger(__name__)


class ScoringWorker:
    """A daemon thread that keeps every image scored by the active model."""

    def __init__(self, runtime: Runtime, poll_seconds: float = 5.0) -> None:
        self.runtime = runtime
        self.poll_seconds = poll_seconds
        if not isinstance(runtime.scoring_queue, InProcessScoringQueue):
            raise TypeError("the in-process scorer needs the in-process scoring queue")
        self.queue: InProcessScoringQueue = runtime.scoring_queue
        self.current = jobs.CurrentEngine(runtime)
        self.scored = 0
        self.heatmaps = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, name="marco-scorer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self.queue.put([])  # wake it
        self._thread.join(timeout)

    def wait_until_scored(self, timeout: float) -> bool:
        """True once no image is pending for the active model (for tests and the demo)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            engine = self.current.engine
            if engine is not None and engine.is_current() and self._idle.is_set():
                with self.runtime.db.session() as session:
                    if not pending_images(session, engine.version_id, 1):
                        return True
            time.sleep(0.1)
        return False

    def status(self) -> dict[str, Any]:
        engine = self.current.engine
        return {
            "running": self._thread.is_alive(),
            "model": engine.model.ref if engine else None,
            "scored": self.scored,
            "heatmaps": self.heatmaps,
            "last_error": self.last_error,
        }

    def _one_heatmap(self, engine: ScoringEngine) -> bool:
        if not jobs.wants_heatmaps(engine):
            return False
        image_id = heatmaps.next_hit_without_heatmap(self.runtime, engine.version)
        if image_id is None:
            return False
        jobs.make_heatmap(self.runtime, image_id, engine.version_id)
        self.heatmaps += 1
        return True

    def _run(self) -> None:
        wait = 0.0
        while not self._stop.is_set():
            self.queue.get(timeout=wait, max_items=100_000)
            if self._stop.is_set():
                break
            try:
                self._idle.clear()
                engine = self.current.get()
                self.scored += engine.run_pending()
                busy = self._one_heatmap(engine)
                self.last_error = None
            except NoModel as exc:
                self.last_error, busy = str(exc), False
            except Exception as exc:  # keep the service alive; report and retry later
                log.exception("scoring failed")
                self.last_error, busy = f"{type(exc).__name__}: {exc}", False
                time.sleep(min(self.poll_seconds, 1.0))
            if not busy:
                self._idle.set()
            wait = 0.0 if busy else self.poll_seconds
