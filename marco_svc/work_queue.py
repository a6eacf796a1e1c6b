"""Images waiting to be scored: a tiny queue interface and its two implementations.

Ingest (watcher, robot upload) puts the ids of images it created. Without a broker they
wake the in-process scorer (`InProcessScoringQueue`); with one, a put only wakes this
process's dispatcher (`WakeUpQueue`), which finds the new images in the
database and sends them to the Celery workers. The database stays the durable truth
(images with status `new`), so a queue lost with the process, or one that overflowed,
loses nothing: the scorer and the dispatcher also sweep what is pending.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Protocol


class ScoringQueue(Protocol):
    """Where ingest announces new images; `len` is how many wait in this process."""

    def put(self, image_ids: Iterable[int]) -> None: ...

    def __len__(self) -> int: ...


class WakeUpQueue:
    """With a broker: a put wakes this process's dispatcher, which reads the database."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def put(self, image_ids: Iterable[int]) -> None:
        if any(True for _ in image_ids):
            self._event.set()

    def wake(self) -> None:
        self._event.set()

    def wait(self, timeout: float | None) -> bool:
        """True when woken within `timeout`; the next wait waits again."""
        woken = self._event.wait(timeout)
        self._event.clear()
        return woken

    def __len__(self) -> int:
        return 0


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
