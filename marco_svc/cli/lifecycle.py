"""Long-running commands: stop cleanly on SIGINT or SIGTERM."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_requested() -> Iterator[threading.Event]:
    """An event set by SIGINT / SIGTERM while inside the block (old handlers restored)."""
    stop = threading.Event()

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    with _handlers(handler):
        yield stop


@contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, as SIGINT does (servers stop cleanly on it)."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    with _handlers(handler, (signal.SIGTERM,)):
        yield


@contextmanager
def _handlers(
    handler: Callable[[int, FrameType | None], None],
    signals: tuple[signal.Signals, ...] = STOP_SIGNALS,
) -> Iterator[None]:
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
