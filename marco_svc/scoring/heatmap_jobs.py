"""Heatmaps asked for over HTTP, computed by a small bounded pool, never in a request thread.

A SmoothGrad heatmap is seconds of TensorFlow; computed in waitress's worker threads, a
handful of them starved `/healthz` and every other request. `HeatmapJobs` runs them on
`workers` threads with at most `max_queued` waiting; a request waits a little
(`wait_seconds`) and otherwise answers "come back later" (`Pending`, HTTP 202 with
Retry-After) or, when the queue is full, "busy" (`HeatmapQueueFull`, HTTP 503).

One job per key: callers asking for the same heatmap at once share one computation. A
finished job is handed to the first caller that collects it (and to every caller that was
already waiting on it), then forgotten: the heatmap cache on disk is the lasting copy. An
uncollected result is kept `keep_seconds` (default five minutes), so memory stays bounded.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

FIRST_GUESS_SECONDS = 5.0  # how long a job takes, until one has been measured
MAX_RETRY_AFTER = 300


@dataclass(frozen=True)
class Ready(Generic[T]):
    """The job is done: its value."""

    value: T


@dataclass(frozen=True)
class Pending:
    """The job is not done: ask again in `retry_after` seconds (>= 1). `position` is 0 while
    it is being computed, else its place in the queue (1: it starts next)."""

    retry_after: int
    position: int


class HeatmapUnavailable(Exception):
    """No job can be taken now; try again in `retry_after` seconds (HTTP 503)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HeatmapQueueFull(HeatmapUnavailable):
    """`max_queued` jobs are already waiting for a worker."""


class HeatmapJobsClosed(HeatmapUnavailable):
    """The pool is closed (the service is stopping); a queued job was cancelled."""


@dataclass
class _Job:
    seq: int
    future: Future[Any] = field(default_factory=Future)
    started: float | None = None
    finished: float | None = None
    waiters: int = 0


class HeatmapJobs:
    """A bounded pool of heatmap computations, one per key; thread-safe."""

    def __init__(self, workers: int = 1, max_queued: int = 16, *, keep_seconds: float = 300.0):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers, self.max_queued, self.keep_seconds = workers, max(0, max_queued), keep_seconds
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="heatmap")
        self._lock = threading.Lock()
        self._jobs: dict[Hashable, _Job] = {}
        self._seq = itertools.count()
        self._mean_seconds = FIRST_GUESS_SECONDS
        self._closed = False

    def request(
        self, key: Hashable, compute: Callable[[], T], wait_seconds: float = 0.0
    ) -> Ready[T] | Pending:
        """The job for `key`, started with `compute` when there is none, after waiting up to
        `wait_seconds` for it: Ready(value) once done (and forgotten), else Pending.

        A job that raised re-raises its exception here. Raises HeatmapQueueFull when a new
        job would exceed `max_queued` waiting ones, HeatmapJobsClosed after close().
        """
        with self._lock:
            if self._closed:
                raise HeatmapJobsClosed("heatmap jobs are closed", self._retry_full())
            self._forget_stale(time.monotonic())
            job = self._jobs.get(key)
            if job is None:
                active = sum(
                    j.finished is None and not j.future.done() for j in self._jobs.values()
                )
                if active >= self.workers + self.max_queued:
                    raise HeatmapQueueFull(
                        f"{active - self.workers} heatmaps are waiting for a worker",
                        self._retry_full(),
                    )
                job = _Job(next(self._seq))
                job.future = self._pool.submit(self._run, job, compute)
                self._jobs[key] = job
            job.waiters += 1
        # Future.exception(timeout), not futures.wait(): a future cancelled by close() wakes
        # the former, while the latter sleeps out its timeout.
        with contextlib.suppress(FutureTimeout, CancelledError):
            job.future.exception(timeout=max(0.0, wait_seconds))
        with self._lock:
            job.waiters -= 1
            if not job.future.done():
                return self._pending(job)
            if self._jobs.get(key) is job:
                del self._jobs[key]
            if job.future.cancelled():
                raise HeatmapJobsClosed("the heatmap job was cancelled", self._retry_full())
        return Ready(job.future.result())

    def status(self) -> dict[str, int]:
        """Jobs being computed, waiting for a worker, done but not yet collected; and callers
        waiting on a job now."""
        with self._lock:
            self._forget_stale(time.monotonic())
            jobs = list(self._jobs.values())
            done = sum(job.future.done() for job in jobs)
            queued = len(self._queued())
            return {
                "running": len(jobs) - done - queued,
                "queued": queued,
                "done": done,
                "waiting": sum(job.waiters for job in jobs),
            }

    def close(self, wait: bool = True) -> None:
        """Cancel the queued jobs and take no new ones; with `wait`, return once the running
        ones are finished (their callers still get their outcome)."""
        with self._lock:
            self._closed = True
            self._jobs.clear()
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def _run(self, job: _Job, compute: Callable[[], T]) -> T:
        with self._lock:
            job.started = started = time.monotonic()
        try:
            value = compute()
        except BaseException:
            with self._lock:
                job.finished = time.monotonic()
            raise
        with self._lock:
            job.finished = time.monotonic()
            self._mean_seconds += 0.3 * (job.finished - started - self._mean_seconds)
        return value

    # The helpers below run with the lock held.

    def _queued(self) -> list[_Job]:
        """Jobs not started, in the pool's (first come, first served) order."""
        waiting = [job for job in self._jobs.values() if job.started is None]
        return sorted((job for job in waiting if not job.future.done()), key=lambda j: j.seq)

    def _pending(self, job: _Job) -> Pending:
        mean = self._mean_seconds
        if job.started is not None:
            left = mean - (time.monotonic() - job.started)
            return Pending(_seconds(left), 0)
        position = 1 + sum(other.seq < job.seq for other in self._queued())
        rounds = math.ceil(position / self.workers)  # of the queue, before this one starts
        return Pending(_seconds(self._soonest_free() + (rounds - 1) * mean + mean), position)

    def _soonest_free(self) -> float:
        """Seconds until a worker should be free: the shortest expected time left of the
        running jobs (0 when a worker is idle)."""
        now, mean = time.monotonic(), self._mean_seconds
        started = [
            job.started
            for job in self._jobs.values()
            if job.started is not None and job.finished is None
        ]
        if len(started) < self.workers:
            return 0.0
        return max(0.0, min(mean - (now - when) for when in started))

    def _retry_full(self) -> int:
        return _seconds(self._soonest_free() or self._mean_seconds)

    def _forget_stale(self, now: float) -> None:
        for key, job in list(self._jobs.items()):
            if (
                job.future.done()
                and job.waiters == 0
                and (job.finished is None or now - job.finished > self.keep_seconds)
            ):
                del self._jobs[key]


def _seconds(value: float) -> int:
    """Retry-After: whole seconds, at least 1."""
    return min(MAX_RETRY_AFTER, max(1, math.ceil(value)))
