"""The running service: the runtime (settings, database, scoring queue) and the background
parts that `serve` and `watch` start, assembled once and handed to the web app.

`Service` owns the watcher and the scoring worker: it starts and stops them together and
answers for their health (the watcher's heartbeat included), so the API, the command
line and tests ask one object, never a Flask extension slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marco_svc.config import Settings
from marco_svc.runtime import Runtime
from marco_svc.scoring.heatmap_jobs import HeatmapJobs

if TYPE_CHECKING:  # they pull in heavy imports (watchdog, TensorFlow, Celery) only when used
    from marco_svc.scoring.worker import ScoringWorker
    from marco_svc.tasks.dispatcher import Dispatcher
    from marco_svc.tasks.heatmap_requests import BrokerHeatmapJobs
    from marco_svc.watch import Watcher


@dataclass(frozen=True)
class Trouble:
    """Why the service is unhealthy: a title and a detail for a problem document."""

    title: str
    detail: str


class Service:
    """The runtime plus an optional watcher and scorer, started and stopped together, and
    what computes heatmaps asked for over HTTP (`heatmap_jobs`).

    The scorer is the in-process scoring worker, or, with a broker (setting broker_url),
    the dispatcher that sends the images to the Celery workers; heatmaps then go to the
    workers too."""

    def __init__(
        self,
        runtime: Runtime,
        watcher: Watcher | None = None,
        scorer: ScoringWorker | Dispatcher | None = None,
        heatmap_jobs: HeatmapJobs | BrokerHeatmapJobs | None = None,
    ) -> None:
        self.runtime, self.watcher, self.scorer = runtime, watcher, scorer
        self.heatmap_jobs = heatmap_jobs or _heatmap_jobs(runtime.settings)
        self._started = False

    @classmethod
    def assemble(
        cls,
        runtime: Runtime,
        watch_roots: Sequence[str | Path] | None = None,
        *,
        adapter: str | None = None,
        polling: bool | None = None,
    ) -> Service:
        """A service as the settings ask: a watcher over `watch_roots` (default: the setting;
        none: no watcher) and, when `scoring_enabled`, the scoring worker thread, or with a
        broker the dispatcher that feeds the Celery workers."""
        roots = runtime.settings.watch_roots if watch_roots is None else watch_roots
        watcher = scorer = None
        if roots:
            from marco_svc.watch import watcher_for

            watcher = watcher_for(runtime, roots, adapter=adapter, polling=polling)
        if runtime.settings.scoring_enabled and runtime.settings.broker_url:
            from marco_svc.tasks.dispatcher import Dispatcher

            scorer = Dispatcher(runtime)
        elif runtime.settings.scoring_enabled:
            from marco_svc.scoring.worker import ScoringWorker

            scorer = ScoringWorker(runtime)
        return cls(runtime, watcher, scorer)

    def start(self) -> None:
        """Start scoring first (it drains what the watcher will queue), then watching.

        TensorFlow, which scoring loads, is imported first: its import keeps its start-up
        lines off stderr only while no other thread writes there.
        """
        if self._started:
            return
        self._started = True
        if self.scorer is not None:
            if not self.runtime.settings.broker_url:  # the scorer runs models here
                from marco_svc.nets import quiet_tensorflow

                quiet_tensorflow()
            self.scorer.start()
        if self.watcher is not None:
            self.watcher.start()

    def stop(self) -> None:
        """Stop watching (the file in hand is finished), then scoring, then heatmap jobs
        (queued ones are cancelled, a running one is finished)."""
        if not self._started:
            return
        self._started = False
        if self.watcher is not None:
            self.watcher.stop()
        if self.scorer is not None:
            self.scorer.stop()
        self.heatmap_jobs.close()

    def __enter__(self) -> Service:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def trouble(self) -> Trouble | None:
        """What is wrong with the background parts, if anything (for /healthz)."""
        watcher = self.watcher
        if watcher is None or not self._started:
            return None
        stuck = watcher.stuck_for()
        if stuck:
            return Trouble("Watcher stuck", f"its work loop has not come round for {stuck:.0f} s")
        if not watcher.alive():
            return Trouble("Watcher stopped", "file events are not processed")
        return None

    def status(self) -> dict[str, Any]:
        """The background parts' state: the scorer's and the watcher's, when present."""
        body: dict[str, Any] = {}
        if self.scorer is not None:
            body["scorer"] = self.scorer.status()
        if self.watcher is not None:
            body["watcher"] = {
                "alive": self.watcher.alive(),
                "stuck_seconds": round(self.watcher.stuck_for(), 1),
                "roots": self.watcher.roots,
                "counts": dict(self.watcher.stats),
            }
        return body


def _heatmap_jobs(settings: Settings) -> HeatmapJobs | BrokerHeatmapJobs:
    """The in-process pool, or the Celery workers when a broker is configured."""
    if settings.broker_url:
        from marco_svc.tasks.app import celery_app
        from marco_svc.tasks.heatmap_requests import BrokerHeatmapJobs

        return BrokerHeatmapJobs(
            celery_app(settings), settings.broker_queue, settings.smoothgrad_samples
        )
    return HeatmapJobs(settings.heatmap_workers, settings.heatmap_queue)
