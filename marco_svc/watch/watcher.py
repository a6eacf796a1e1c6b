"""The watcher: complete files from the folder loop through `ingest`, created ids out.

`FolderLoop` (`loop`) owns the observer, the events, the walks and the settle rules;
the watcher adds what the server does with a complete file: parse it with the imager
adapters, store it with `marco_svc.ingest.ingest` (the one ingest path) and announce
created images on the scoring queue. Walks ask the database which files are stored
already (`scan.mark_stored`). Nothing a file does (bad bytes, unknown name, an adapter's
exception) stops the loop; a database outage keeps the file pending and retries it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from imager_adapters.record import ImageRecord, Rejection
from imager_adapters.registry import Adapter, parse_path
from marco_svc.db.session import Database
from marco_svc.errors import first_line
from marco_svc.ingest import ingest
from marco_svc.watch.loop import FolderLoop, LoopOptions, Walked, WatchError
from marco_svc.watch.scan import mark_stored
from marco_svc.work_queue import ScoringQueue

log = logging.getLogger(__name__)
_DUE_BATCH = 256

__all__ = ["WatchError", "WatchOptions", "Watcher"]


@dataclass(frozen=True)
class WatchOptions(LoopOptions):
    """The folder loop's options, folders it leaves alone, and when it counts as stuck."""

    ignore: tuple[str, ...] = ()
    stall_seconds: float = 120.0


class Watcher(FolderLoop):
    """Ingests every image under `roots` exactly once, as it arrives and after a restart."""

    thread_name = "marco-watch"
    log = log

    def __init__(
        self,
        db: Database,
        roots: Sequence[str | Path],
        adapters: Sequence[Adapter] | None = None,
        options: WatchOptions | None = None,
        scoring_queue: ScoringQueue | None = None,
    ) -> None:
        self.options = options or WatchOptions()
        super().__init__(roots, self.options, self.options.ignore, self.options.stall_seconds)
        self.db, self.adapters, self.scoring_queue = db, adapters, scoring_queue

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Listen first, then backfill: nothing slips between the scan and the events."""
        self._start_loop()
        log.info("watching %s", ", ".join(self.roots))

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the file in hand, then stop listening."""
        self._stopping.set()
        self._inbox.wake()
        if self._thread is not None:
            self._thread.join(timeout)
        self._stop_observer(timeout)
        log.info("watcher stopped: %s", dict(self.stats))

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the loop's hooks ---------------------------------------------------------------

    def _mark(self, files: Iterable[tuple[str, os.stat_result]]) -> Iterator[Walked]:
        return mark_stored(self.db, files)

    def _ready_limit(self) -> int:
        return _DUE_BATCH

    def _on_stuck(self, path: str, reason: str) -> None:
        self._store(path, Rejection(Path(path), f"{reason}; not read", "watcher"))

    def _on_ready(self, paths: list[str]) -> None:
        for path in paths:
            if self._stopping.is_set():
                return
            self._look_at(path)
            self._beat = time.monotonic()

    # -- one file -------------------------------------------------------------------------

    def _look_at(self, path: str) -> None:
        signature = self._pending.signature(path)
        if signature is not None and self._recent.get(path) == signature:
            self._pending.forget(path)  # an echo of a file already stored as it is
            self.stats["unchanged"] += 1
            return
        answer = parse_path(Path(path), self.adapters)
        transient = isinstance(answer, Rejection) and answer.transient
        if transient and self._pending.retry_later(path, time.monotonic()):
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
        self._remember(path, signature)
        self.stats[result.outcome] += 1
        if result.outcome == "failed":
            log.warning("failed %s: %s", path, result.reason)
        else:
            log.info("%s %s (image %d)", result.outcome, path, result.image_id)
        if result.outcome == "created" and self.scoring_queue is not None:
            self.scoring_queue.put([result.image_id])
