"""Heatmap jobs: a bounded pool, one computation per key, never in the caller's thread.

Real threads and fake computations that block on events; no sleep is an assertion.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from marco_svc.scoring.heatmap_jobs import (
    HeatmapJobs,
    HeatmapJobsClosed,
    HeatmapQueueFull,
    Pending,
    Ready,
)
from tests.helpers import wait_for

LONG = 30.0  # an event that never comes within this is a failure, not a slow machine


class Gate:
    """A fake computation: counts its calls and its concurrency, and blocks until opened."""

    def __init__(self, value: object = "png") -> None:
        self.value = value
        self.opened = threading.Event()
        self.calls = 0
        self.running = 0
        self.most_running = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self) -> object:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.threads.add(threading.current_thread().name)
        try:
            assert self.opened.wait(LONG), "the gate was never opened"
            return self.value
        finally:
            with self._lock:
                self.running -= 1


@pytest.fixture
def jobs() -> Iterator[HeatmapJobs]:
    pool = HeatmapJobs(workers=1, max_queued=16)
    yield pool
    pool.close(wait=False)


def _all_at_once(n: int, ask: Callable[[], object]) -> list[object]:
    """`n` threads call `ask` together (released by a barrier); their answers or exceptions."""
    barrier = threading.Barrier(n)

    def one() -> object:
        barrier.wait(LONG)
        try:
            return ask()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(n) as callers:
        return list(callers.map(lambda _: one(), range(n)))


def test_one_computation_per_key_under_sixteen_concurrent_requests(jobs: HeatmapJobs) -> None:
    gate = Gate()
    answers = _all_at_once(16, lambda: jobs.request("img-1", gate, wait_seconds=0))
    assert all(isinstance(a, Pending) for a in answers), answers
    assert gate.calls <= 1
    wait_for(lambda: gate.calls == 1, LONG, "the computation to start")

    # sixteen callers that wait share the same running job
    waited: list[object] = []
    callers = [
        threading.Thread(target=lambda: waited.append(jobs.request("img-1", gate, LONG)))
        for _ in range(16)
    ]
    for caller in callers:
        caller.start()
    wait_for(lambda: jobs.status()["waiting"] == 16, LONG, "16 waiting callers")
    gate.opened.set()
    for caller in callers:
        caller.join(LONG)
    assert waited == [Ready("png")] * 16
    assert gate.calls == 1
    assert all(name.startswith("heatmap") for name in gate.threads), "computed in the pool"


def test_pending_then_ready_and_then_forgotten(jobs: HeatmapJobs) -> None:
    gate = Gate()
    first = jobs.request("k", gate)
    assert isinstance(first, Pending)
    assert first.retry_after >= 1 and first.position in (0, 1)
    wait_for(lambda: jobs.status()["running"] == 1 and gate.calls == 1, LONG, "the job to run")
    running = jobs.request("k", gate)
    assert isinstance(running, Pending) and running.position == 0 and running.retry_after >= 1
    gate.opened.set()
    wait_for(lambda: jobs.status()["done"] == 1, LONG, "the job to finish")
    assert jobs.request("k", gate) == Ready("png")
    assert jobs.status() == {"running": 0, "queued": 0, "done": 0, "waiting": 0}
    # collected, so forgotten: asking again computes again (the caller's disk cache is
    # what saves that in the service)
    assert jobs.request("k", gate, wait_seconds=LONG) == Ready("png")
    assert gate.calls == 2


def test_a_waiting_request_gets_the_value_when_it_comes_in_time(jobs: HeatmapJobs) -> None:
    gate = Gate()
    gate.opened.set()
    assert jobs.request("quick", gate, wait_seconds=LONG) == Ready("png")


def test_queued_jobs_have_positions_and_a_full_queue_is_refused() -> None:
    jobs = HeatmapJobs(workers=1, max_queued=3)
    gate = Gate()
    try:
        assert isinstance(jobs.request("running", gate), Pending)
        wait_for(lambda: gate.calls == 1, LONG, "the first job to run")
        positions = [jobs.request(f"q{i}", gate) for i in range(3)]
        assert [p.position for p in positions if isinstance(p, Pending)] == [1, 2, 3]
        assert all(isinstance(p, Pending) and p.retry_after >= 1 for p in positions)
        later = [p.retry_after for p in positions if isinstance(p, Pending)]
        assert later == sorted(later)
        with pytest.raises(HeatmapQueueFull) as full:
            jobs.request("one-too-many", gate)
        assert full.value.retry_after >= 1
        # a job already queued is still answered, not refused
        again = jobs.request("q2", gate)
        assert isinstance(again, Pending) and again.position == 3
        assert jobs.status()["queued"] == 3
        gate.opened.set()
        for key in ("running", "q0", "q1", "q2"):
            assert jobs.request(key, gate, wait_seconds=LONG) == Ready("png")
        assert isinstance(jobs.request("one-too-many", gate, wait_seconds=LONG), Ready)
    finally:
        jobs.close(wait=False)


def test_an_exception_reaches_the_caller_once(jobs: HeatmapJobs) -> None:
    gate = Gate()

    def broken() -> object:
        gate()
        raise ValueError("no Keras artifact")

    assert isinstance(jobs.request("bad", broken), Pending)
    gate.opened.set()
    wait_for(lambda: jobs.status()["done"] == 1, LONG, "the job to fail")
    with pytest.raises(ValueError, match="no Keras artifact"):
        jobs.request("bad", broken)
    assert jobs.status()["done"] == 0, "a collected failure is forgotten"
    with pytest.raises(ValueError, match="no Keras artifact"):
        jobs.request("bad", broken, wait_seconds=LONG)  # asked again: tried again
    assert gate.calls == 2


def test_every_caller_waiting_on_a_failing_job_gets_its_exception(jobs: HeatmapJobs) -> None:
    gate = Gate(value=None)

    def broken() -> object:
        gate()
        raise RuntimeError("out of memory")

    answers = []
    callers = [
        threading.Thread(
            target=lambda: answers.append(_catch(lambda: jobs.request("x", broken, LONG)))
        )
        for _ in range(4)
    ]
    for caller in callers:
        caller.start()
    wait_for(lambda: jobs.status()["waiting"] == 4, LONG, "4 waiting callers")
    gate.opened.set()
    for caller in callers:
        caller.join(LONG)
    assert [type(a) for a in answers] == [RuntimeError] * 4
    assert gate.calls == 1


def _catch(call: Callable[[], object]) -> object:
    try:
        return call()
    except Exception as exc:
        return exc


@pytest.mark.parametrize("workers", [1, 3])
def test_never_more_than_workers_compute_at_once(workers: int) -> None:
    jobs = HeatmapJobs(workers=workers, max_queued=16)
    gate = Gate()
    try:
        keys = [f"img-{i}" for i in range(12)]
        for key in keys:
            assert isinstance(jobs.request(key, gate), Pending)
        wait_for(lambda: gate.running == workers, LONG, f"{workers} jobs to run")
        assert jobs.status() == {
            "running": workers,
            "queued": len(keys) - workers,
            "done": 0,
            "waiting": 0,
        }
        gate.opened.set()
        results = [jobs.request(key, gate, wait_seconds=LONG) for key in keys]
        assert results == [Ready("png")] * len(keys)
        assert gate.calls == len(keys)
        assert gate.most_running == workers
    finally:
        jobs.close(wait=False)


def test_close_cancels_queued_jobs_and_refuses_new_ones() -> None:
    jobs = HeatmapJobs(workers=1, max_queued=4)
    gate = Gate()
    assert isinstance(jobs.request("running", gate), Pending)
    wait_for(lambda: gate.calls == 1, LONG, "the first job to run")
    assert isinstance(jobs.request("queued", gate), Pending)
    waiting = []
    caller = threading.Thread(
        target=lambda: waiting.append(_catch(lambda: jobs.request("queued", gate, LONG)))
    )
    caller.start()
    wait_for(lambda: jobs.status()["waiting"] == 1, LONG, "a caller waiting on the queued job")
    jobs.close(wait=False)
    caller.join(LONG)
    assert isinstance(waiting[0], HeatmapJobsClosed), waiting
    with pytest.raises(HeatmapJobsClosed):
        jobs.request("new", gate)
    gate.opened.set()
    jobs.close()  # again, waiting for the running one: idempotent
    assert gate.calls == 1, "the queued job never ran"


def test_close_lets_the_running_job_finish_for_its_caller() -> None:
    jobs = HeatmapJobs(workers=1)
    gate = Gate()
    answers = []
    caller = threading.Thread(
        target=lambda: answers.append(jobs.request("running", gate, wait_seconds=LONG))
    )
    caller.start()
    wait_for(lambda: gate.calls == 1, LONG, "the job to run")
    closer = threading.Thread(target=jobs.close)  # waits for the running job
    closer.start()
    gate.opened.set()
    closer.join(LONG)
    caller.join(LONG)
    assert answers == [Ready("png")]
