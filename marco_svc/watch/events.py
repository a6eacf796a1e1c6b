"""watchdog observers and the event handler that feeds the watcher's bounded queue.

The handler runs on watchdog's thread and never blocks: when the queue is full the
event is dropped and a rescan of the watched folders is requested instead, so a burst
costs a walk, never unbounded memory or a lost file.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Sequence

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

# What the watcher hears: ("file" | "complete" | "gone" | "dir", path).
Event = tuple[str, str]
EVENT_TYPES: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
]


class EventInbox:
    """A bounded queue of events with counters, so 'nothing in flight' can be told."""

    def __init__(self, maxsize: int, on_overflow: Callable[[], None]) -> None:
        self.queue: queue.Queue[Event | None] = queue.Queue(maxsize)
        self.on_overflow = on_overflow
        self._lock = threading.Lock()
        self.received = 0
        self.handled = 0
        self.dropped = 0

    def push(self, kind: str, path: str) -> None:
        with self._lock:
            self.received += 1
        try:
            self.queue.put_nowait((kind, path))
        except queue.Full:
            self.on_overflow()
            with self._lock:
                self.dropped += 1
                self.handled += 1

    def done(self) -> None:
        with self._lock:
            self.handled += 1

    def settled(self) -> bool:
        with self._lock:
            return self.received == self.handled

    def wake(self) -> None:
        """Unblock a waiting reader (used on stop)."""
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(None)


class Handler(FileSystemEventHandler):
    """Turns watchdog events into watcher events."""

    def __init__(self, inbox: EventInbox) -> None:
        self.inbox = inbox

    def on_created(self, event: FileSystemEvent) -> None:
        self.inbox.push("dir" if event.is_directory else "file", os.fsdecode(event.src_path))

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.inbox.push("file", os.fsdecode(event.src_path))

    def on_closed(self, event: FileSystemEvent) -> None:
        self.inbox.push("complete", os.fsdecode(event.src_path))

    def on_deleted(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.inbox.push("gone", os.fsdecode(event.src_path))

    def on_moved(self, event: FileSystemEvent) -> None:
        if event.src_path and not event.is_directory:
            self.inbox.push("gone", os.fsdecode(event.src_path))
        if event.dest_path:
            kind = "dir" if event.is_directory else "complete"
            self.inbox.push(kind, os.fsdecode(event.dest_path))


def start_observer(
    roots: Sequence[str], handler: Handler, polling: bool, poll_seconds: float = 1.0
) -> BaseObserver:
    """A started observer over every root (recursive); PollingObserver for network shares."""
    observer: BaseObserver = PollingObserver(timeout=poll_seconds) if polling else Observer()
    for root in roots:
        observer.schedule(handler, root, recursive=True, event_filter=EVENT_TYPES)
    observer.daemon = True
    observer.start()
    return observer
