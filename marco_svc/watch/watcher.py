"""The watcher: file events and backfill scans in, complete files through `ingest`, ids out.

Threads: watchdog's observer pushes events into a bounded inbox (never blocking); one
work thread owns everything else: it turns events and scan results into pending files,
looks at each when due (`stability`), parses complete ones with the imager adapters,
stores them with `marco_svc.ingest.ingest` (the one ingest path) and announces created
images on the scoring queue. Memory is bounded by `queue_size` (inbox and pending files
each); past it, events are dropped and the folders rescanned instead. Nothing a file
does (bad bytes, unknown name, an adapter's exception) stops the loop; a database
outage keeps the file pending and retries it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from imager_adapters.record import ImageRecord, Rejection
from imager_adapters.registry import Adapter, is_image_file, parse_path
from marco_svc.db.session import Database
from marco_svc.errors import first_line
from marco_svc.file_access import FilePolicy
from marco_svc.ingest import ingest
from marco_svc.watch.events import EventInbox, Handler, start_observer
from marco_svc.watch.scan import is_hidden_below, is_ignored, mark_stored, walk_images
from marco_svc.watch.stability import Pending, Verdict
from marco_svc.work_queue import ScoringQueue

log = logging.getLogger(__name__)
_BUDGET = 1000  # events or scanned files taken per turn of the loop
_DUE_BATCH = 256


class WatchError(ValueError):
    """The watcher cannot start (no such folder)."""


@dataclass(frozen=True)
class WatchOptions:
    """How the watcher judges completeness, how much it holds, how it listens."""

    settle: float = 2.0
    max_wait: float = 600.0
    rescan_interval: float = 600.0
    queue_size: int = 10_000
    polling: bool = False
    poll_seconds: float = 1.0
    policy: FilePolicy = field(default_factory=FilePolicy)  # watched roots always allowed
    ignore: tuple[str, ...] = ()
    stall_seconds: float = 120.0


class Watcher:
    """Ingests every image under `roots` exactly once, as it arrives and after a restart."""

    def __init__(
        self,
        db: Database,
        roots: Sequence[str | Path],
        adapters: Sequence[Adapter] | None = None,
        options: WatchOptions | None = None,
        scoring_queue: ScoringQueue | None = None,
    ) -> None:
        if not roots:
            raise WatchError("no folder to watch")
        self.roots = [str(Path(root).resolve()) for root in roots]
        for root, given in zip(self.roots, roots, strict=True):
            if not Path(root).is_dir():
                raise WatchError(f"cannot watch {given}: not a folder")
        self.db, self.adapters, self.scoring_queue = db, adapters, scoring_queue
        self.options = options or WatchOptions()
        self.ignore = tuple(str(Path(p).resolve()) for p in self.options.ignore)
        policy = self.options.policy
        self.policy = policy.with_roots([*policy.roots, *self.roots])
        self.stats: Counter[str] = Counter()
        self._pending = Pending(
            self.options.settle, self.options.max_wait, trust_mtime=not self.options.polling
        )
        self._inbox = EventInbox(self.options.queue_size, self._overflow)
        self._jobs: deque[tuple[str, Iterator[tuple[str, os.stat_result, bool]]]] = deque()
        self._recent: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._rescan = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._full_queued = False
        self._last_scan = time.monotonic()
        self._observer_retry_at = 0.0
        self._scan_retry_at = 0.0
        self._observer = None
        self._thread: threading.Thread | None = None
        self._beat = time.monotonic()

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Listen first, then backfill: nothing slips between the scan and the events."""
        self._rescan.set()
        self._beat = time.monotonic()
        self._observer = start_observer(
            self.roots, Handler(self._inbox), self.options.polling, self.options.poll_seconds
        )
        self._thread = threading.Thread(target=self._run, name="marco-watch", daemon=True)
        self._thread.start()
        log.info("watching %s", ", ".join(self.roots))

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the file in hand, then stop listening."""
        self._stopping.set()
        self._inbox.wake()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        log.info("watcher stopped: %s", dict(self.stats))

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def alive(self) -> bool:
        """The work loop runs, came round within `stall_seconds`, and file events arrive."""
        return bool(
            self._thread is not None
            and self._thread.is_alive()
            and not self.stuck_for()
            and self._observer is not None
            and self._observer.is_alive()
        )

    def stuck_for(self) -> float:
        """Seconds since the work loop last came round, when over `stall_seconds`; else 0."""
        silent = time.monotonic() - self._beat
        return silent if silent > self.options.stall_seconds else 0.0

    def idle(self) -> bool:
        """Nothing pending, queued, scanning or in flight."""
        with self._lock:
            return (
                not self._rescan.is_set()
                and not self._jobs
                and len(self._pending) == 0
                and self._inbox.settled()
            )

    def wait_idle(self, timeout: float) -> bool:
        """Poll until idle (True) or the timeout (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.idle():
                return True
            time.sleep(0.05)
        return self.idle()

    # -- the loop ---------------------------------------------------------------------

    def _overflow(self) -> None:
        self.stats["overflows"] += 1
        self._rescan.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._turn()
            except Exception:  # the loop must outlive any bug in one turn
                self.stats["errors"] += 1
                log.exception("watcher: unexpected error; going on")
                self._stopping.wait(1.0)

    def _turn(self) -> None:
        now = self._beat = time.monotonic()
        self._watch_observer(now)
        interval = self.options.rescan_interval
        if interval > 0 and not self._jobs and now - self._last_scan >= interval:
            self._rescan.set()
        if self._scan_retry_at and now >= self._scan_retry_at:
            self._scan_retry_at = 0.0
            self._rescan.set()
        with self._lock:
            if self._rescan.is_set():
                self._rescan.clear()
                if not self._full_queued:
                    self._full_queued = True
                    self._jobs.append(("full", self._scan(self.roots)))
        room = self.options.queue_size
        taken = 0
        while taken < _BUDGET and len(self._pending) < room:
            try:
                item = self._inbox.queue.get_nowait()
            except queue.Empty:
                break
            self._on_event(item, now)
            taken += 1
        while self._jobs and taken < _BUDGET and len(self._pending) < room:
            self._scan_one(now)
            taken += 1
        for path in self._pending.due(now, _DUE_BATCH):
            if self._stopping.is_set():
                return
            self._look_at(path)
            self._beat = time.monotonic()
        self._sleep(busy=taken >= _BUDGET)

    def _sleep(self, busy: bool) -> None:
        now = time.monotonic()
        room = len(self._pending) < self.options.queue_size
        if busy or (self._jobs and room):
            return
        next_check = self._pending.next_check()
        timeout = 0.5 if next_check is None else min(0.5, max(0.0, next_check - now))
        if timeout <= 0:
            return
        if not room:
            self._stopping.wait(timeout)
            return
        try:
            item = self._inbox.queue.get(timeout=timeout)
        except queue.Empty:
            return
        self._on_event(item, time.monotonic())

    def _watch_observer(self, now: float) -> None:
        """Restart file events if the observer died (e.g. a share went away and came back)."""
        if self._observer is None or self._observer.is_alive() or now < self._observer_retry_at:
            return
        log.error("file events stopped; restarting the observer")
        self.stats["observer_restarts"] += 1
        try:
            self._observer = start_observer(
                self.roots, Handler(self._inbox), self.options.polling, self.options.poll_seconds
            )
            self._rescan.set()
        except OSError as exc:
            log.error("cannot watch %s: %s; trying again in 10 s", self.roots, exc)
            self._observer_retry_at = now + 10

    # -- events and scans ---------------------------------------------------------------

    def _wanted(self, path: str) -> bool:
        return (
            is_image_file(Path(path))
            and not is_ignored(path, self.ignore)
            and not is_hidden_below(path, self.roots)
        )

    def _on_event(self, item: tuple[str, str] | None, now: float) -> None:
        if item is None:  # a wake-up on stop
            return
        kind, path = item
        try:
            if kind == "dir":
                if not is_ignored(path, self.ignore) and not is_hidden_below(path, self.roots):
                    self._jobs.append(("dir", self._scan([path])))
            elif kind == "gone":
                self._pending.forget(path)
                self._recent.pop(path, None)
            elif self._wanted(path):
                self._pending.touch(path, now, complete=kind == "complete")
        finally:
            self._inbox.done()

    def _scan(self, folders: Sequence[str]) -> Iterator[tuple[str, os.stat_result, bool]]:
        for folder in folders:
            yield from mark_stored(self.db, walk_images(folder, self.ignore))

    def _scan_one(self, now: float) -> None:
        kind, job = self._jobs[0]
        if kind == "full" and self._full_queued:
            with self._lock:
                self._full_queued = False  # started: a new request needs a new walk
            self.stats["scans"] += 1
        try:
            path, stat, stored = next(job)
        except StopIteration:
            self._jobs.popleft()
            if kind == "full":
                self._last_scan = time.monotonic()
            return
        except Exception as exc:  # e.g. the database went away mid-walk: walk again later
            self._jobs.popleft()
            self.stats["errors"] += 1
            delay = min(10.0, max(1.0, 4 * self.options.settle))
            self._scan_retry_at = now + delay
            log.error("folder scan failed, again in %g s: %s", delay, first_line(exc))
            return
        if stored or self._recent.get(path) == (stat.st_size, stat.st_mtime_ns):
            self.stats["skipped"] += 1
        else:
            self._pending.touch(path, now)

    # -- one file -------------------------------------------------------------------------

    def _look_at(self, path: str) -> None:
        now = time.monotonic()
        try:
            verdict = self._pending.check(path, os.stat(path), now, time.time())
        except (FileNotFoundError, NotADirectoryError):
            verdict = self._pending.check(path, None, now, time.time())
        except OSError:
            verdict = Verdict.READY  # unreadable: ingest records why
        if verdict is Verdict.GONE:
            self.stats["gone"] += 1
            return
        if verdict is Verdict.WAIT:
            return
        if verdict is Verdict.STUCK:
            reason = f"still being written after {self.options.max_wait:g} s; not read"
            self._store(path, Rejection(Path(path), reason, "watcher"))
            return
        signature = self._pending.signature(path)
        if signature is not None and self._recent.get(path) == signature:
            self._pending.forget(path)  # an echo of a file already stored as it is
            self.stats["unchanged"] += 1
            return
        answer = parse_path(Path(path), self.adapters)
        transient = isinstance(answer, Rejection) and answer.transient
        if transient and self._pending.retry_later(path, now):
            self.stats["waits"] += 1
            log.debug("waiting for %s: %s", path, answer.reason)
            return
        self._store(path, answer)

    def _store(self, path: str, item: ImageRecord | Rejection) -> None:
        try:
            result = ingest(self.db, item, self.policy)
        except Exception as exc:  # the database, not the file: keep it and retry
            self.stats["errors"] += 1
            log.error("cannot store %s, will retry: %s", path, first_line(exc))
            self._pending.retry_later(path, time.monotonic(), give_up=False)
            return
        signature = self._pending.signature(path)
        self._pending.forget(path)
        if signature is not None:
            self._recent[path] = signature
            while len(self._recent) > self.options.queue_size:
                self._recent.popitem(last=False)
        self.stats[result.outcome] += 1
        if result.outcome == "failed":
            log.warning("failed %s: %s", path, result.reason)
        else:
            log.info("%s %s (image %d)", result.outcome, path, result.image_id)
        if result.outcome == "created" and self.scoring_queue is not None:
            self.scoring_queue.put([result.image_id])
