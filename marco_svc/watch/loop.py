"""The folder loop both watchers share: file events and folder walks in, settled files out.

Threads: watchdog's observer pushes events into a bounded inbox (`events`, never
blocking); one work thread owns everything else. Each turn it restarts a dead observer,
turns events and walks (`scan.walk_images`: at start, every `rescan_interval`, and after
an overflow) into pending files, judges the due ones with the settle rules
(`stability`), and hands the files that are complete to `_on_ready`, the one hook a
subclass must fill in (the server's `Watcher` stores them, the edge agent scores them).
Memory is bounded by `queue_size` (inbox and pending files each); past it, events are
dropped and the folders walked again instead. Nothing here touches a database.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imager_adapters.registry import is_image_file
from marco_svc.errors import first_line
from marco_svc.file_access import FilePolicy
from marco_svc.watch.events import EventInbox, Handler, start_observer
from marco_svc.watch.scan import is_hidden_below, is_ignored, walk_images
from marco_svc.watch.stability import Pending, Verdict

BUDGET = 1000  # events or walked files taken per turn of the loop
Walked = tuple[str, os.stat_result, bool]  # path, stat, already handled (as it is now)


class WatchError(ValueError):
    """A folder loop cannot start (no folder, or not a folder)."""


@dataclass(frozen=True)
class LoopOptions:
    """How a folder loop judges completeness, how much it holds, how it listens."""

    settle: float = 2.0
    max_wait: float = 600.0
    rescan_interval: float = 600.0
    queue_size: int = 10_000
    polling: bool = False
    poll_seconds: float = 1.0
    policy: FilePolicy = field(default_factory=FilePolicy)  # watched roots always allowed


class FolderLoop:
    """Watches `roots` and hands each complete image file to `_on_ready`, once per change.

    Subclasses set `thread_name` and `log`, and may override `_mark` (which walked files
    are already handled), `_handled`, `_ready_limit` (0: take none now), `_on_stuck` and
    `_on_turn` (extra work each turn).
    """

    thread_name = "marco-watch"
    log = logging.getLogger(__name__)

    def __init__(
        self,
        roots: Sequence[str | Path],
        options: LoopOptions,
        ignore: Sequence[str] = (),
        stall_seconds: float = 120.0,
    ) -> None:
        if not roots:
            raise WatchError("no folder to watch")
        self.roots = [str(Path(root).resolve()) for root in roots]
        for root, given in zip(self.roots, roots, strict=True):
            if not Path(root).is_dir():
                raise WatchError(f"cannot watch {given}: not a folder")
        self.ignore = tuple(str(Path(p).resolve()) for p in ignore)
        self.stall_seconds = stall_seconds
        self._loop = options
        policy = options.policy
        self.policy = policy.with_roots([*policy.roots, *self.roots])
        self.stats: Counter[str] = Counter()
        self._pending = Pending(options.settle, options.max_wait, trust_mtime=not options.polling)
        self._inbox = EventInbox(options.queue_size, self._overflow)
        self._jobs: deque[tuple[str, Iterator[Walked]]] = deque()
        self._recent: OrderedDict[str, tuple[int, int]] = OrderedDict()  # handled as they are
        self._rescan = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._full_queued = False  # a walk of every root waits to start
        self._last_scan = time.monotonic()
        self._observer_retry_at = 0.0
        self._scan_retry_at = 0.0
        self._observer: Any = None
        self._thread: threading.Thread | None = None
        self._beat = time.monotonic()

    # -- hooks ------------------------------------------------------------------------------

    def _on_ready(self, paths: list[str]) -> None:
        """Complete files (each judged ready now); forget each from `_pending` once done."""
        raise NotImplementedError

    def _ready_limit(self) -> int:
        """How many due files to judge this turn (0: none now; the loop only listens)."""
        return 256

    def _on_stuck(self, path: str, reason: str) -> None:
        """A file still changing after `max_wait` seconds."""
        self._pending.forget(path)

    def _on_turn(self, now: float) -> None:
        """Extra work at the start of each turn."""

    def _mark(self, files: Iterable[tuple[str, os.stat_result]]) -> Iterator[Walked]:
        """Walked files, each marked handled or not (here: never; `_handled` decides)."""
        for path, stat in files:
            yield path, stat, False

    def _handled(self, path: str, stat: os.stat_result) -> bool:
        """Already handled as it is now (walks skip it)."""
        return self._recent.get(path) == (stat.st_size, stat.st_mtime_ns)

    # -- life cycle -------------------------------------------------------------------------

    def _start_loop(self) -> threading.Thread:
        """Listen first, then walk the folders: nothing slips between a walk and events."""
        self._stopping.clear()
        self._rescan.set()
        self._beat = time.monotonic()
        self._observer = self._new_observer()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self._thread

    def _new_observer(self) -> Any:
        options = self._loop
        return start_observer(
            self.roots, Handler(self._inbox), options.polling, options.poll_seconds
        )

    def _stop_observer(self, timeout: float) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
            self._observer = None

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
        return silent if silent > self.stall_seconds else 0.0

    def idle(self) -> bool:
        """Nothing to walk, pending or queued."""
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

    # -- the loop ---------------------------------------------------------------------------

    def _overflow(self) -> None:
        self.stats["overflows"] += 1
        self._rescan.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._turn()
            except Exception:  # the loop must outlive any bug in one turn
                self.stats["errors"] += 1
                self.log.exception("%s: unexpected error; going on", self.thread_name)
                self._stopping.wait(1.0)

    def _turn(self) -> None:
        now = self._beat = time.monotonic()
        self._watch_observer(now)
        self._on_turn(now)
        interval = self._loop.rescan_interval
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
                    self._jobs.append(("full", self._walk(self.roots)))
        room = self._loop.queue_size
        taken = 0
        while taken < BUDGET and len(self._pending) < room:
            try:
                item = self._inbox.queue.get_nowait()
            except queue.Empty:
                break
            self._on_event(item, now)
            taken += 1
        while self._jobs and taken < BUDGET and len(self._pending) < room:
            self._walk_one(now)
            taken += 1
        limit = self._ready_limit()
        if limit:
            ready = self._ready(now, limit)
            if ready:
                self._on_ready(ready)
                return
        self._sleep(busy=taken >= BUDGET, waiting=not limit)

    def _sleep(self, busy: bool, waiting: bool) -> None:
        """Wait for the next event or due check (at most 0.5 s); `waiting`: due files are
        not taken now, so only events matter."""
        room = len(self._pending) < self._loop.queue_size
        if busy or (self._jobs and room):
            return
        next_check = None if waiting else self._pending.next_check()
        timeout = 0.5 if next_check is None else min(0.5, max(0.0, next_check - time.monotonic()))
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
        observer = self._observer
        if observer is None or observer.is_alive() or self._stopping.is_set():
            return
        if now < self._observer_retry_at:
            return
        self.log.error("file events stopped; restarting the observer")
        self.stats["observer_restarts"] += 1
        try:
            self._observer = self._new_observer()
            self._rescan.set()
        except OSError as exc:
            self.log.error("cannot watch %s: %s; trying again in 10 s", self.roots, exc)
            self._observer_retry_at = now + 10

    # -- events and walks -------------------------------------------------------------------

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
                    self._jobs.append(("dir", self._walk([path])))
            elif kind == "gone":
                self._pending.forget(path)
                self._recent.pop(path, None)
            elif self._wanted(path):
                self._pending.touch(path, now, complete=kind == "complete")
        finally:
            self._inbox.done()

    def _walk(self, folders: Sequence[str]) -> Iterator[Walked]:
        for folder in folders:
            yield from self._mark(walk_images(folder, self.ignore))

    def _walk_one(self, now: float) -> None:
        kind, job = self._jobs[0]
        if kind == "full" and self._full_queued:
            with self._lock:
                self._full_queued = False  # started: a new request needs a new walk
            self.stats["scans"] += 1
        try:
            path, stat, known = next(job)
        except StopIteration:
            self._jobs.popleft()
            if kind == "full":
                self._last_scan = time.monotonic()
            return
        except Exception as exc:  # e.g. a database went away mid-walk: walk again later
            self._jobs.popleft()
            self.stats["errors"] += 1
            delay = min(10.0, max(1.0, 4 * self._loop.settle))
            self._scan_retry_at = now + delay
            self.log.error("folder scan failed, again in %g s: %s", delay, first_line(exc))
            return
        if known or self._handled(path, stat):
            self.stats["skipped"] += 1
        else:
            self._pending.touch(path, now)

    # -- due files --------------------------------------------------------------------------

    def _ready(self, now: float, limit: int) -> list[str]:
        """Up to `limit` due files, judged now: those complete (or unreadable: reading them
        records why)."""
        ready: list[str] = []
        for path in self._pending.due(now, limit):
            if self._stopping.is_set():
                break
            try:
                stat: os.stat_result | None = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                stat = None
            except OSError:
                ready.append(path)
                continue
            verdict = self._pending.check(path, stat, time.monotonic(), time.time())
            if verdict is Verdict.GONE:
                self.stats["gone"] += 1
            elif verdict is Verdict.STUCK:
                self._on_stuck(path, f"still being written after {self._loop.max_wait:g} s")
            elif verdict is Verdict.READY:
                ready.append(path)
        return ready

    def _remember(self, path: str, signature: tuple[int, int] | None) -> None:
        """Handled as it is (size, mtime_ns): walks and echoes skip it until it changes."""
        if signature is None:
            return
        self._recent[path] = signature
        while len(self._recent) > self._loop.queue_size:
            self._recent.popitem(last=False)
