"""Find the adapter that understands a path: configured ones, built-ins, then plug-ins.

A lab adds its rig with a package that declares an entry point in the group
`marco_svc.imager_adapters` naming an object with `name` and `parse(path)`; or with
a configured pattern (`imager_adapters.pattern`); or, for a Rock Maker store, with
metadata exports (`imager_adapters.rockmaker`). `configured_adapters` builds the list
from those settings; the first adapter that answers (not None) for a path wins.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol

from imager_adapters.record import ImageRecord, Rejection

ENTRY_POINT_GROUP = "marco_svc.imager_adapters"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"})


class Adapter(Protocol):
    """Turns a path into a record; None means 'not my naming scheme'."""

    name: str

    def parse(self, path: Path) -> ImageRecord | Rejection | None: ...


def _builtins() -> list[Adapter]:
    from imager_adapters import formulatrix, pattern, rockmaker

    return [formulatrix.FLAT_EXPORT, rockmaker.ROCKMAKER_TREE, *pattern.presets()]


def _plugins() -> list[Adapter]:
    return [ep.load() for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)]


@cache
def adapters() -> tuple[Adapter, ...]:
    """Every adapter with no configuration, built-ins first, in a fixed order."""
    return (*_builtins(), *_plugins())


def configured_adapters(
    rockmaker_metadata: Iterable[str | Path] = (), patterns: Iterable[str] = ()
) -> tuple[Adapter, ...]:
    """Configured patterns first, then built-ins (the Rock Maker tree reading
    `rockmaker_metadata`, CSV files or folders), then plug-ins."""
    from imager_adapters.pattern import pattern_adapter
    from imager_adapters.rockmaker import ROCKMAKER_TREE, RockMakerTree

    metadata = list(rockmaker_metadata)
    tree = RockMakerTree(metadata) if metadata else ROCKMAKER_TREE
    found = [pattern_adapter(spec) for spec in patterns]
    found += [tree if a is ROCKMAKER_TREE else a for a in _builtins()]
    found += _plugins()
    names = [a.name for a in found]
    twice = sorted({n for n in names if names.count(n) > 1} - {a.name for a in _builtins()})
    if twice:
        raise ValueError(f"two imager adapters named {twice[0]!r}")
    return tuple(found)


def adapter_named(name: str, among: Iterable[Adapter] | None = None) -> Adapter:
    """The first adapter called `name` (configured ones shadow built-ins of that name)."""
    pool = list(adapters() if among is None else among)
    for adapter in pool:
        if adapter.name == name:
            return adapter
    known = ", ".join(dict.fromkeys(a.name for a in pool))
    raise KeyError(f"no imager adapter named {name!r} (known: {known})")


def parse_path(path: Path, chosen: Iterable[Adapter] | None = None) -> ImageRecord | Rejection:
    """The first adapter's answer for this path, or a Rejection naming the problem."""
    path = Path(path)
    for adapter in chosen if chosen is not None else adapters():
        try:
            answer = adapter.parse(path)
        except Exception as exc:  # a plug-in's bug must not stop the flow
            return Rejection(path, f"imager adapter {adapter.name!r} failed: {exc!r}", adapter.name)
        if answer is not None:
            return answer
    return Rejection(path, f"unknown naming scheme: no imager adapter recognises {path.name!r}")


def is_image_file(path: Path) -> bool:
    """True for file names with an image suffix (hidden and partial files excluded)."""
    name = path.name
    return (
        path.suffix.lower() in IMAGE_SUFFIXES
        and not name.startswith(".")
        and not name.endswith((".part", ".tmp", "~"))
    )
