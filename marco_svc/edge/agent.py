"""The edge agent's work loop: new image files in, scored results into the outbox.

The folder loop is the service watcher's (`marco_svc.watch.loop.FolderLoop`: watchdog
events into a bounded inbox, folder walks at start and every `rescan_interval`, the
settle rules, one work thread); the agent fills in what happens to complete files: it
parses them with the imager adapters (`imager_adapters.registry.parse_path`), reads
them under the file policy (`marco_svc.file_access.read_image_file`: size limit,
links, the full decode check), and scores them in batches through
`marco_svc.scoring.batch.score_batch` with the model's LiteRT runner, the server's
preprocessing. Each result is put in the outbox before anything goes on the network; a
second thread (`Forwarder`) drains it, a third (`ModelManager`) keeps the model current
and a fourth (`FilePuller`, when given) sends the image files the server asks for.

A file already in the outbox (same path, size and mtime) is not read again, so a
restart costs a walk. Unknown naming: logged and skipped. A corrupt image: logged and
put in the outbox as failed with its reason (never sent as a score). Quality flags need
OpenCV: without it (the `edge` extra has none) results carry `quality: {}`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from imager_adapters.record import ImageRecord, Rejection
from imager_adapters.registry import Adapter, parse_path
from marco_svc.edge.forwarder import Forwarder
from marco_svc.edge.model_updates import EdgeModel, ModelError, ModelManager
from marco_svc.edge.outbox import FileStamp, Outbox, now_iso
from marco_svc.edge.pull import FilePuller
from marco_svc.errors import first_line
from marco_svc.file_access import read_image_file
from marco_svc.scoring.batch import Limits, score_batch
from marco_svc.watch.loop import FolderLoop, LoopOptions
from marco_svc.watch.scan import is_hidden_below, walk_images

log = logging.getLogger(__name__)
COMPACT_EVERY = 24 * 3600.0


@dataclass(frozen=True)
class AgentOptions(LoopOptions):
    """The folder loop's options (watched roots always allowed by `policy`), how the agent
    batches, the imager name sent when a path names none, and how it stops."""

    batch_size: int = 8
    imager: str = ""
    stop_timeout: float = 60.0
    flush_seconds: float = 10.0  # at stop, forward what is pending for at most this long


@dataclass(frozen=True)
class _File:
    """A complete file that parsed and read cleanly, waiting for its batch."""

    path: str
    stamp: FileStamp
    record: ImageRecord
    sha256: str
    width: int
    height: int


def quality_function() -> Callable[[bytes, int | None], dict] | None:
    """The server's quality checks when OpenCV is installed, else None."""
    try:
        from marco_svc.scoring.quality import quality_of
    except ImportError:
        return None
    return quality_of


def _iso(moment: datetime) -> str:
    """ISO 8601 with an offset (a naive time from an adapter is UTC)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def _plate_type(record: ImageRecord) -> str | None:
    """'96x2' when the source states wells and drops; None lets the server infer it."""
    if record.plate_wells and record.plate_drops:
        return f"{record.plate_wells}x{record.plate_drops}"
    return None


def result_key(image_sha256: str, model_sha256: str, slot: Sequence[Any]) -> str:
    """The outbox and server key: one result per image bytes, model file and drop slot."""
    text = "\n".join([image_sha256, model_sha256, "|".join(str(part) for part in slot)])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EdgeAgent(FolderLoop):
    """Scores every image that arrives under `roots` and queues the results.

    `start()` / `stop()` (or `run_until(event)`) run it in threads; `scan_once()` does
    one synchronous pass instead (not while started). `forwarder` may be None (results
    then wait in the outbox).
    """

    thread_name = "marco-edge"
    log = log

    def __init__(
        self,
        roots: Sequence[str | Path],
        outbox: Outbox,
        models: ModelManager,
        forwarder: Forwarder | None = None,
        adapters: Sequence[Adapter] | None = None,
        options: AgentOptions | None = None,
    ) -> None:
        self.options = options or AgentOptions()
        super().__init__(roots, self.options)
        self.outbox, self.models, self.forwarder = outbox, models, forwarder
        self.adapters = list(adapters) if adapters is not None else None
        self.quality = quality_function()
        self._background_stop = threading.Event()
        self._last_compact = float("-inf")  # compact once at start, then daily
        self._no_model_told: str | None = None
        self._threads: list[threading.Thread] = []
        self.puller: FilePuller | None = None  # sends the files the server asks for
        if self.quality is None:
            log.info("OpenCV is not installed: results carry no quality flags")

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Listen first, then walk the folders: nothing slips between the walk and events."""
        self._background_stop.clear()
        self.outbox.set_meta(
            "agent", {"started_at": now_iso(), "pid": os.getpid(), "watch": self.roots}
        )
        self._threads.append(self._start_loop())
        if self.forwarder is not None:
            self._spawn("marco-edge-forward", lambda: self.forwarder.run(self._background_stop))
        if self.models.updates:
            self._spawn("marco-edge-models", lambda: self.models.run(self._background_stop))
        if self.puller is not None:
            self._spawn("marco-edge-pull", lambda: self.puller.run(self._background_stop))
        log.info("watching %s", ", ".join(self.roots))

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout: float | None = None) -> None:
        """Finish the batch in hand, stop listening, then forward what is pending for at
        most `flush_seconds` (what is left stays in the outbox for the next start)."""
        timeout = self.options.stop_timeout if timeout is None else timeout
        self._stopping.set()
        self._background_stop.set()
        self._inbox.wake()
        if self.forwarder is not None:
            self.forwarder.wake()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]
        self._stop_observer(max(0.1, deadline - time.monotonic()))
        forwarding = any(t.name == "marco-edge-forward" for t in self._threads)
        if self.forwarder is not None and not forwarding and self.forwarder.failures == 0:
            self.forwarder.drain(time.monotonic() + self.options.flush_seconds)
        self.outbox.set_meta("agent_stopped_at", now_iso())
        log.info("edge agent stopped: %s; outbox %s", dict(self.stats), self.outbox.depth())

    def run_until(self, stop: threading.Event) -> None:
        """Run until `stop` is set (e.g. by SIGTERM or Ctrl-C), then stop cleanly."""
        self.start()
        try:
            while not stop.wait(1.0):
                pass
        finally:
            self.stop()

    def __enter__(self) -> EdgeAgent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one synchronous pass ---------------------------------------------------------------

    def scan_once(self) -> Counter[str]:
        """Walk the folders now and score every image not handled yet whose mtime is at
        least `settle` seconds old; what this pass did, by outcome. Raises ModelError
        when there is no model."""
        model = self.models.current
        if model is None:
            raise ModelError(self.models.problem or "no model")
        before = Counter(self.stats)
        wall = time.time()
        batch: list[str] = []
        for root in self.roots:
            for path, stat in walk_images(root):
                if is_hidden_below(path, self.roots) or self._handled(path, stat):
                    continue
                if wall - stat.st_mtime < self.options.settle:
                    self.stats["too_new"] += 1
                    continue
                batch.append(path)
                if len(batch) >= self.options.batch_size:
                    self._process(batch, model)
                    batch = []
        if batch:
            self._process(batch, model)
        done = Counter(self.stats)
        done.subtract(before)
        return +done

    # -- the folder loop's hooks ------------------------------------------------------------

    def _on_turn(self, now: float) -> None:
        if now - self._last_compact >= COMPACT_EVERY:
            self._last_compact = now
            self.outbox.compact()

    def _ready_limit(self) -> int:
        return self.options.batch_size if self._model() is not None else 0

    def _on_ready(self, paths: list[str]) -> None:
        model = self.models.current
        if model is None:  # not expected: a model is never taken away
            for path in paths:
                self._pending.retry_later(path, time.monotonic(), give_up=False)
            return
        self._process(paths, model)

    def _on_stuck(self, path: str, reason: str) -> None:
        self._skip(path, reason)

    def _handled(self, path: str, stat: os.stat_result) -> bool:
        """In the outbox as it is now, or skipped as it is now (unknown naming)."""
        if super()._handled(path, stat):
            return True
        return self.outbox.has_file(FileStamp(path, stat.st_size, stat.st_mtime_ns))

    def _model(self) -> EdgeModel | None:
        model = self.models.current
        if model is None and len(self._pending):
            why = self.models.problem or "no model yet"
            if why != self._no_model_told:
                log.warning("%d images wait for a model: %s", len(self._pending), why)
                self._no_model_told = why
        elif model is not None:
            self._no_model_told = None
        return model

    # -- files ------------------------------------------------------------------------------

    def _skip(self, path: str, reason: str, level: int = logging.WARNING) -> None:
        """Leave a file alone until it changes (logged once)."""
        self._pending.forget(path)
        self.stats["not_taken"] += 1
        log.log(level, "skipped %s: %s", path, reason)
        try:
            stat = os.stat(path)
        except OSError:
            return
        self._remember(path, (stat.st_size, stat.st_mtime_ns))

    def _admit(self, path: str, model: EdgeModel) -> tuple[_File, bytes] | None:
        """Parse, read and check one file: the file and its bytes, or None (skipped,
        failed, or to be looked at again later)."""
        try:
            stat = os.stat(path)
        except OSError:
            self._pending.forget(path)
            self.stats["gone"] += 1
            return None
        stamp = FileStamp(path, stat.st_size, stat.st_mtime_ns)
        if self.outbox.has_file(stamp):
            self._pending.forget(path)
            self.stats["skipped"] += 1
            return None
        answer = parse_path(Path(path), self.adapters)
        if isinstance(answer, Rejection):
            if answer.transient and self._pending.retry_later(path, time.monotonic()):
                log.debug("waiting for %s: %s", path, answer.reason)
            else:
                self._skip(path, answer.reason)
            return None
        record = answer
        facts = read_image_file(Path(path), self.policy)
        if facts.refused and facts.problem and facts.problem.startswith("unreadable file"):
            self._retry(path, facts.problem)  # e.g. still locked by its writer (Windows)
            return None
        if facts.problem is not None:
            self._fail(path, stamp, record, facts.sha256, model, facts.problem, facts.size)
            return None
        try:
            data = Path(facts.path).read_bytes()
        except OSError as exc:
            self._retry(path, f"cannot read it again: {exc.strerror or exc}")
            return None
        if hashlib.sha256(data).hexdigest() != facts.sha256:
            self._retry(path, "it changed while read")
            return None
        info = facts.info
        assert info is not None  # no problem: checked
        return _File(path, stamp, record, facts.sha256, info.width, info.height), data

    def _retry(self, path: str, why: str) -> None:
        if not self._pending.retry_later(path, time.monotonic()):
            self._skip(path, why)
        else:
            log.info("will look at %s again: %s", path, why)

    def _process(self, paths: Sequence[str], model: EdgeModel) -> None:
        """Score one batch of complete files with `model` and put the results."""
        admitted = [found for path in paths if (found := self._admit(path, model)) is not None]
        if not admitted:
            return
        try:
            scored, failed = score_batch(
                model.runner, admitted, Limits(max_pixels=None), self._quality_extra
            )
        except Exception as exc:  # the model, not the images: keep them and retry
            self.stats["errors"] += 1
            log.error("scoring failed, will retry: %s", first_line(exc))
            for file, _ in admitted:
                self._pending.retry_later(file.path, time.monotonic(), give_up=False)
            return
        for failure in failed:
            file = failure.key
            reason = f"cannot decode the image: {failure.reason}"
            self._fail(file.path, file.stamp, file.record, file.sha256, model, reason)
        for result in scored:
            file = result.key
            if not all(math.isfinite(p) for p in result.probabilities.values()):
                reason = f"the model {model.card.ref} gave no valid probabilities (NaN)"
                self._fail(file.path, file.stamp, file.record, file.sha256, model, reason)
                continue
            item = self._item(file, model)
            item.update(
                probabilities={
                    label: min(1.0, max(0.0, round(p, 6)))  # the contract's [0, 1]
                    for label, p in result.probabilities.items()
                },
                top_class=result.top,
                latency_ms=round(result.seconds * 1000, 2),
                quality=result.extra if result.extra is not None else {},
            )
            self._put(file.path, item, file.stamp)
            self.stats["scored"] += 1
        if self.forwarder is not None:
            self.forwarder.wake()

    def _quality_extra(self, file: _File, data: bytes) -> dict:
        if self.quality is None:
            return {}
        try:
            return self.quality(data, file.width)
        except Exception as exc:  # the score stands without its quality flags
            log.debug("no quality flags for %s: %s", file.path, first_line(exc))
            return {}

    def _item(self, file: _File, model: EdgeModel) -> dict[str, Any]:
        record = file.record
        imager = record.imager or self.options.imager
        imaged_at = _iso(record.inspected_at)
        slot = (record.barcode, imaged_at, imager, record.well, record.drop, record.imaging_mode)
        return {
            "key": result_key(file.sha256, model.sha256, slot),
            "barcode": record.barcode,
            "well": record.well,
            "drop": record.drop,
            "imaged_at": imaged_at,
            "imager": imager,
            "imaging_mode": record.imaging_mode,
            "plate_type": _plate_type(record),
            "path": file.path,
            "sha256": file.sha256,
            "size_bytes": file.stamp.size,
            "width": file.width,
            "height": file.height,
            "model": model.identity(),
        }

    def _put(
        self, path: str, item: dict[str, Any], stamp: FileStamp, failed: str | None = None
    ) -> None:
        new = self.outbox.put(item["key"], item, stamp, failed=failed)
        self._pending.forget(path)
        if not new:  # the same image for the same slot, e.g. a copy: not read again
            self._remember(path, (stamp.size, stamp.mtime_ns))
            self.stats["duplicate"] += 1
            log.info("%s: already in the outbox (the same image for the same drop)", path)
        elif failed is None:
            log.info("scored %s: %s", path, item["top_class"])

    def _fail(
        self,
        path: str,
        stamp: FileStamp,
        record: ImageRecord,
        sha256: str,
        model: EdgeModel,
        reason: str,
        size: int | None = None,
    ) -> None:
        """A file that cannot be scored: in the outbox as failed here, never sent."""
        file = _File(path, stamp, record, sha256 or f"unread:{path}", 0, 0)
        item = self._item(file, model)
        item.update(sha256=sha256 or None, width=None, height=None, reason=reason)
        if size is not None:
            item["size_bytes"] = size
        self._put(path, item, stamp, failed=reason)
        self.stats["failed"] += 1
        log.warning("failed %s: %s", path, reason)
