"""Find the adapter that understands a path: built-ins first, then installed plug-ins.

A lab adds its rig with a package that declares an entry point in the group
`marco_svc.imager_adapters` naming an object with `name` and `parse(path)`.
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
    from imager_adapters import formulatrix

    return [formulatrix.FLAT_EXPORT]


@cache
def adapters() -> tuple[Adapter, ...]:
    """Every adapter, built-ins first, in a fixed order."""
    found: list[Adapter] = list(_builtins())
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        found.append(ep.load())
    return tuple(found)


def adapter_named(name: str) -> Adapter:
    for adapter in adapters():
        if adapter.name == name:
            return adapter
    known = ", ".join(a.name for a in adapters())
    raise KeyError(f"no imager adapter named {name!r} (known: {known})")


def parse_path(path: Path, chosen: Iterable[Adapter] | None = None) -> ImageRecord | Rejection:
    """The first adapter's answer for this path, or a Rejection naming the problem."""
    path = Path(path)
    for adapter in chosen if chosen is not None else adapters():
        answer = adapter.parse(path)
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
