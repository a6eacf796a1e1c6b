"""When is a file complete? Pending files, their last seen size and mtime, and when to look again.

A file is complete (ready to read) when one of these holds:
- its writer closed it after writing (inotify close-write) or it was moved or renamed
  into place (writers rename finished files), and it has not been written to since;
- its size and mtime have not changed for `settle` seconds of observation;
- its mtime is already `settle` seconds old when we look (a file that was there before,
  e.g. at start or after a move); off when `trust_mtime` is False (polling a network
  share whose clock may differ from ours).
A file still changing `max_wait` seconds after it was first seen is `STUCK`.
"""

from __future__ import annotations

import heapq
import itertools
import os
from dataclasses import dataclass
from enum import Enum


class Verdict(Enum):
    READY = "ready"
    WAIT = "wait"
    GONE = "gone"
    STUCK = "stuck"


@dataclass
class _Entry:
    first_seen: float
    changed_at: float
    check_at: float
    size: int = -1
    mtime_ns: int = -1
    closed: bool = False
    retries: int = 0


class Pending:
    """Files seen but not yet ingested; `due` tells which to look at now."""

    def __init__(self, settle: float, max_wait: float, trust_mtime: bool = True) -> None:
        self.settle, self.max_wait, self.trust_mtime = settle, max_wait, trust_mtime
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: str) -> bool:
        return path in self._entries

    def _schedule(self, path: str, entry: _Entry, when: float) -> None:
        entry.check_at = when
        heapq.heappush(self._heap, (when, next(self._seq), path))

    def touch(self, path: str, now: float, complete: bool = False) -> None:
        """Something happened to `path`; `complete`: its writer closed it or moved it in."""
        entry = self._entries.get(path)
        if entry is None:
            entry = _Entry(first_seen=now, changed_at=now, check_at=now, closed=complete)
            self._entries[path] = entry
            self._schedule(path, entry, now)
        elif complete:
            entry.closed = True
            if entry.check_at > now:
                self._schedule(path, entry, now)
        else:
            entry.closed = False  # written again; the settle timer looks at it next

    def forget(self, path: str) -> None:
        self._entries.pop(path, None)

    def due(self, now: float, limit: int) -> list[str]:
        """Up to `limit` paths whose check time has come."""
        found: list[str] = []
        while self._heap and self._heap[0][0] <= now and len(found) < limit:
            when, _, path = heapq.heappop(self._heap)
            entry = self._entries.get(path)
            if entry is not None and entry.check_at == when and path not in found:
                found.append(path)
        return found

    def next_check(self) -> float | None:
        """When the earliest scheduled check falls (stale heap items included)."""
        return self._heap[0][0] if self._heap else None

    def check(self, path: str, stat: os.stat_result | None, now: float, wall: float) -> Verdict:
        """Judge `path` from a fresh stat (None: it is gone) and schedule the next look."""
        entry = self._entries.get(path)
        if entry is None or stat is None:
            self.forget(path)
            return Verdict.GONE
        if (stat.st_size, stat.st_mtime_ns) != (entry.size, entry.mtime_ns):
            # A write after the close arrives as an event (touch resets `closed`).
            entry.size, entry.mtime_ns, entry.changed_at = stat.st_size, stat.st_mtime_ns, now
        old = self.trust_mtime and wall - stat.st_mtime >= self.settle
        if entry.closed or old or now - entry.changed_at >= self.settle:
            return Verdict.READY
        if now - entry.first_seen >= self.max_wait:
            return Verdict.STUCK
        self._schedule(path, entry, max(entry.changed_at + self.settle, now + self.settle / 10))
        return Verdict.WAIT

    def retry_later(self, path: str, now: float, give_up: bool = True) -> bool:
        """Look again later with a growing delay; False once `max_wait` is over (if `give_up`)."""
        entry = self._entries.get(path)
        if entry is None:
            return False
        if give_up and now - entry.first_seen >= self.max_wait:
            return False
        entry.retries += 1
        delay = min(max(self.settle, 0.5) * 2 ** min(entry.retries - 1, 8), 60.0)
        self._schedule(path, entry, now + delay)
        return True

    def signature(self, path: str) -> tuple[int, int] | None:
        entry = self._entries.get(path)
        return (entry.size, entry.mtime_ns) if entry else None
