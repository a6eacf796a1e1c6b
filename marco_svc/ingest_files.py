"""Folder ingest and retries, for every front end: walk image files, parse their names with
the imager adapters, and store each through `ingest` under the configured file policy."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from sqlalchemy import select

from imager_adapters.registry import Adapter, is_image_file, parse_path
from marco_svc.config import Settings
from marco_svc.db.models import Image, ImageStatus
from marco_svc.file_access import FilePolicy, is_within
from marco_svc.ingest import IngestResult, ingest
from marco_svc.runtime import Runtime

OnFailure = Callable[[Path, IngestResult], None]


class FolderError(OSError):
    """A folder named for ingest cannot be read."""


def served_roots(settings: Settings) -> list[Path]:
    """Folders whose images may be read through links and served: the data folder,
    the watched folders and `image_roots`, resolved."""
    named = [settings.resolved_data_dir, *settings.watch_roots, *settings.image_roots]
    return list(dict.fromkeys(Path(root).resolve() for root in named))


def file_policy(settings: Settings, extra_roots: Iterable[Path] = ()) -> FilePolicy:
    """The settings' limits, with files allowed to resolve into the served roots and
    `extra_roots` (e.g. a folder named on the command line)."""
    policy = FilePolicy(settings.max_image_pixels, settings.max_image_bytes)
    return policy.with_roots([*served_roots(settings), *extra_roots])


def image_files(root: Path) -> Iterator[Path]:
    """Image files under root, sorted; an unreadable folder is an error, not a silent skip."""
    if not root.is_dir():
        yield root
        return

    def fail(exc: OSError) -> None:
        raise FolderError(f"cannot read folder {exc.filename}: {exc.strerror}")

    for folder, subfolders, files in os.walk(root, onerror=fail):
        subfolders.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if is_image_file(path):
                yield path


def _own_folder(path: Path) -> Path:
    """The folder a named path vouches for: itself, or a named file's folder."""
    return path if path.is_dir() else Path(os.path.abspath(path)).parent


def _offer(
    runtime: Runtime,
    files: Iterable[tuple[Path, FilePolicy]],
    adapters: list[Adapter],
    on_failure: OnFailure | None,
) -> tuple[Counter[str], list[IngestResult]]:
    """Parse and ingest each file under its policy; counts by outcome, and every result."""
    counts: Counter[str] = Counter()
    results = []
    for path, policy in files:
        result = ingest(runtime.db, parse_path(path, adapters), policy)
        counts[result.outcome] += 1
        results.append(result)
        if result.outcome == "failed" and on_failure is not None:
            on_failure(path, result)
    return counts, results


def ingest_paths(
    runtime: Runtime,
    roots: list[Path],
    adapters: list[Adapter],
    on_failure: OnFailure | None = None,
) -> tuple[Counter[str], list[IngestResult]]:
    """Ingest every image file under the roots; counts by outcome, and every result.
    Links found there may resolve into the named roots or the served ones, nowhere else."""
    policy = file_policy(runtime.settings, [_own_folder(root) for root in roots])
    files = ((path, policy) for root in roots for path in image_files(root))
    return _offer(runtime, files, adapters, on_failure)


def unserved(settings: Settings, roots: list[Path]) -> list[Path]:
    """The named roots whose images `/api/v1/images/ID/file` will not serve."""
    served = served_roots(settings)
    return [root for root in roots if not is_within(_own_folder(root).resolve(), served)]


def retry_failed(
    runtime: Runtime,
    adapters: list[Adapter],
    reason: str | None = None,
    on_failure: OnFailure | None = None,
) -> tuple[Counter[str], list[IngestResult]]:
    """Offer every failed file (whose reason contains `reason`) again; counts and results.
    A file may resolve into its own folder or the served ones."""
    query = select(Image.uri).where(Image.status == ImageStatus.FAILED).order_by(Image.id)
    if reason:
        query = query.where(Image.error.contains(reason, autoescape=True))
    with runtime.db.session() as session:
        uris = list(dict.fromkeys(session.scalars(query)))
    served = file_policy(runtime.settings)
    files = ((Path(uri), served.with_roots([*served.roots, Path(uri).parent])) for uri in uris)
    return _offer(runtime, files, adapters, on_failure)
