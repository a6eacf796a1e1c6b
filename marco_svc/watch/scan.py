"""Backfill: walk watched folders lazily and pass on the image files not stored yet.

A file counts as stored when an Image has its (resolved) path as `uri`, the same size,
and was stored after the file's last modification: restarts then cost a directory
walk and one indexed query per batch of paths, not a read of every file. Anything else
goes through ingest, which is idempotent, so a wrong guess costs time, never a row.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

from imager_adapters.registry import is_image_file

if TYPE_CHECKING:  # the walk is pure (the edge agent uses it); the lookup loads the database
    from marco_svc.db.session import Database

log = logging.getLogger(__name__)
BATCH = 256


def is_hidden_below(path: str, roots: Sequence[str]) -> bool:
    """True when a folder between a root and `path` is hidden (name starts with '.')."""
    for root in roots:
        if path.startswith(root.rstrip(os.sep) + os.sep):
            parts = path[len(root.rstrip(os.sep)) + 1 :].split(os.sep)[:-1]
            return any(part.startswith(".") for part in parts)
    return False


def is_ignored(path: str, ignore: Sequence[str]) -> bool:
    return any(path == folder or path.startswith(folder + os.sep) for folder in ignore)


def walk_images(root: str, ignore: Sequence[str] = ()) -> Iterator[tuple[str, os.stat_result]]:
    """(path, stat) of image files under root, one folder open at a time, lazily."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = os.scandir(folder)
        except OSError as exc:
            log.warning("cannot read folder %s: %s", folder, exc.strerror or exc)
            continue
        with entries:
            for entry in entries:
                if entry.name.startswith(".") or is_ignored(entry.path, ignore):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file() and is_image_file(Path(entry.name)):
                        yield entry.path, entry.stat()
                except OSError:
                    continue


def _batches(items: Iterable[tuple[str, os.stat_result]]) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, BATCH)):
        yield chunk


def _mtime_utc(stat: os.stat_result) -> datetime:
    return datetime.fromtimestamp(stat.st_mtime, UTC).replace(tzinfo=None)


def mark_stored(
    db: Database, files: Iterable[tuple[str, os.stat_result]]
) -> Iterator[tuple[str, os.stat_result, bool]]:
    """(path, stat, already stored) for each file, looked up in batches."""
    from sqlalchemy import select

    from marco_svc.db.models import Image

    for chunk in _batches(files):
        with db.session() as session:
            rows = session.execute(
                select(Image.uri, Image.size_bytes, Image.created_at).where(
                    Image.uri.in_([path for path, _ in chunk])
                )
            ).all()
        latest: dict[str, tuple[datetime, int | None]] = {}
        for uri, size, created in rows:
            if uri not in latest or created > latest[uri][0]:
                latest[uri] = (created, size)
        for path, stat in chunk:
            known = latest.get(path)
            stored = known is not None and known[1] == stat.st_size and known[0] >= _mtime_utc(stat)
            yield path, stat, stored
