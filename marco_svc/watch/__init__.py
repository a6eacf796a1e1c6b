"""Unattended ingestion: watch folders, read each image once it is complete, ingest it.

`stability` (when a file is complete), `scan` (backfill walk and stored-file lookup),
`events` (watchdog observer and handler), `loop` (the folder loop: events, walks, settle
rules; a hook for each complete file), `watcher` (the loop that stores files). Importing
this package loads no database code: `stability`, `events`, `loop` and the walk in `scan`
are pure, and the edge agent's loop is a `FolderLoop` too; `Watcher` and `watcher_for`
load the rest when used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from marco_svc.runtime import Runtime
    from marco_svc.watch.loop import WatchError
    from marco_svc.watch.watcher import Watcher, WatchOptions

__all__ = ["WatchError", "WatchOptions", "Watcher", "watcher_for"]


def __getattr__(name: str) -> Any:
    if name == "WatchError":
        from marco_svc.watch.loop import WatchError

        return WatchError
    if name in ("WatchOptions", "Watcher"):
        from marco_svc.watch import watcher

        return getattr(watcher, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def watcher_for(
    runtime: Runtime,
    roots: Sequence[str | Path] | None = None,
    *,
    adapter: str | None = None,
    polling: bool | None = None,
) -> Watcher:
    """A watcher over `roots` (default: the setting watch_roots), configured from settings."""
    from marco_svc.adapters import adapters_for
    from marco_svc.ingest_files import file_policy
    from marco_svc.watch.watcher import Watcher, WatchOptions

    settings = runtime.settings
    options = WatchOptions(
        settle=settings.watch_settle_seconds,
        max_wait=settings.watch_max_wait_seconds,
        rescan_interval=settings.watch_rescan_seconds,
        queue_size=settings.watch_queue_size,
        polling=settings.watch_polling if polling is None else polling,
        policy=file_policy(settings),
        ignore=(str(settings.resolved_data_dir / "uploads"),),
        stall_seconds=settings.watch_stall_seconds,
    )
    return Watcher(
        runtime.db,
        settings.watch_roots if roots is None else roots,
        adapters_for(settings, adapter),
        options,
        runtime.scoring_queue,
    )
