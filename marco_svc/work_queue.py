"""Images waiting to be scored: a tiny queue interface and its in-process implementation.

Ingest (watcher, robot upload) puts the ids of images it created; the scoring engine
takes them in batches. The database stays the durable truth (images with status
`new`), so a queue lost with the process, or one that overflowed, loses nothing: the
scorer also sweeps `new` images (`dropped` tells it one is due).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Protocol


class ScoringQueue(Protocol):
    """Where ingest announces new images and the scorer picks them up."""

    def put(self, image_ids: Iterable[int]) -> None: ...

    def get(self, timeout: float | None = None, max_items: int = 64) -> list[int]: ...


class InProcessScoringQueue:
    """Thread-safe, bounded and coalescing: an id already waiting is not queued twice.

    When full, further ids are dropped and counted in `dropped` (their rows are still
    `new` in the database); `put` never blocks the ingest path.
    """

    def __init__(self, maxsize: int = 100_000) -> None:
        self.maxsize = maxsize
        self.dropped = 0
        self._ids: OrderedDict[int, None] = OrderedDict()
        self._ready = threading.Condition()

    def put(self, image_ids: Iterable[int]) -> None:
        with self._ready:
            for image_id in image_ids:
                if image_id in self._ids:
                    continue
                if len(self._ids) >= self.maxsize:
                    self.dropped += 1
                    continue
                self._ids[image_id] = None
            if self._ids:
                self._ready.notify_all()

    def get(self, timeout: float | None = None, max_items: int = 64) -> list[int]:
        """Up to `max_items` ids, oldest first; [] when none came within `timeout`."""
        with self._ready:
            if not self._ids:
                self._ready.wait_for(lambda: bool(self._ids), timeout)
            batch = []
            while self._ids and len(batch) < max_items:
                batch.append(self._ids.popitem(last=False)[0])
            return batch

    def __len__(self) -> int:
        with self._ready:
            return len(self._ids)
