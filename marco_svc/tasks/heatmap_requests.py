"""Heatmaps asked for over HTTP, computed by the Celery workers instead of the web process.

Same answers as the in-process pool (`scoring.heatmap_jobs`): the API serves a cached
heatmap at once; otherwise a request sends one `marco.heatmap` task (once per heatmap
within `resend_seconds`) and answers "come back later" (`Pending`: 202, Retry-After), and
the worker's result lands in the shared cache where the next request finds it. An
unreachable broker is "busy, retry later" (503).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from celery import Celery
from kombu.exceptions import KombuError

from marco_svc.errors import first_line
from marco_svc.scoring.heatmap_jobs import FIRST_GUESS_SECONDS, HeatmapUnavailable, Pending
from marco_svc.tasks.app import HEATMAP

BROKER_RETRY_SECONDS = 30


class BrokerHeatmapJobs:
    """Sends heatmap jobs to the workers; keyed (image id, model version id, class)."""

    def __init__(
        self, app: Celery, queue: str, samples: int, resend_seconds: float = 300.0
    ) -> None:
        """`samples`: this process's smoothgrad_samples, sent with each job, so the worker
        makes the heatmap this process looks for in the cache."""
        self.app, self.queue, self.resend_seconds = app, queue, resend_seconds
        self.samples = samples
        self._sent: dict[Hashable, float] = {}
        self._lock = threading.Lock()

    def request(
        self, key: Hashable, compute: Callable[[], Any], wait_seconds: float = 0.0
    ) -> Pending:
        """Send the job for `key` unless sent lately; always Pending (the cache answers)."""
        image_id, version_id, class_label = key  # type: ignore[misc]
        now = time.monotonic()
        with self._lock:
            self._sent = {k: t for k, t in self._sent.items() if now - t < self.resend_seconds}
            if key not in self._sent:
                try:
                    self.app.send_task(
                        HEATMAP,
                        args=[image_id, version_id, class_label, self.samples],
                        queue=self.queue,
                    )
                except (KombuError, OSError) as exc:
                    raise HeatmapUnavailable(
                        f"the task broker is unreachable: {first_line(exc)}", BROKER_RETRY_SECONDS
                    ) from None
                self._sent[key] = now
        return Pending(retry_after=int(FIRST_GUESS_SECONDS), position=0)

    def status(self) -> dict[str, int]:
        with self._lock:
            return {"sent_recently": len(self._sent)}

    def close(self, wait: bool = True) -> None:
        """Nothing runs here: the workers own the jobs."""
