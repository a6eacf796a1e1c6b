"""Which files the service reads, and how: regular files inside allowed folders, under a size
limit, hashed and checked as a stream.

Every source (watched folders, `marco-svc ingest`, uploads) reads image files through
`read_image_file`, so one policy decides: a link that resolves outside the allowed roots
is refused (its target is never opened), so is anything but a regular file (a FIFO
would block the reader forever, a device may never end), and so is a file larger than
`max_bytes` (refused from its size, before a byte is read).
"""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, ClassVar

from PIL import Image as PILImage

from marco_svc.image_check import BadImage, ImageInfo, inspect_image_bytes

DEFAULT_MAX_PIXELS = 60_000_000
DEFAULT_MAX_BYTES = 64 * 1024**2
CHUNK = 1024 * 1024
OUTSIDE = (
    "refused: a link that resolves outside the allowed folders "
    "(watch_roots, image_roots, the data dir or the ingested folder)"
)
_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a folder",
}


@dataclass(frozen=True)
class FilePolicy:
    """Limits on what is read: pixels, bytes, and the folders files may resolve into
    (empty: anywhere)."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    roots: tuple[Path, ...] = ()

    def with_roots(self, roots: Iterable[str | os.PathLike[str]]) -> FilePolicy:
        resolved = tuple(dict.fromkeys(Path(root).resolve() for root in roots))
        return FilePolicy(self.max_pixels, self.max_bytes, resolved)


@dataclass(frozen=True)
class FileFacts:
    """What reading one file found. `path` is where it really is (links resolved) when it
    was admitted, else the path as given; `sha256` is '' when it was not read;
    `refused`: the problem is the file itself (not its bytes as an image)."""

    path: Path
    sha256: str
    size: int
    info: ImageInfo | None = None
    problem: str | None = None
    refused: bool = False


def is_within(path: Path, roots: Sequence[Path]) -> bool:
    """True when `path` is one of `roots` or lies below one of them (no resolving here)."""
    return any(path == root or path.is_relative_to(root) for root in roots)


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a plain file")


def _refusal(given: Path, policy: FilePolicy) -> tuple[Path, os.stat_result | None, str | None]:
    """(real path, its stat, why it is refused or None), without opening anything.

    A refused file is known by the path as given; the stat (of the target, never opened)
    gives its size, so that a rescan can tell it is already recorded.
    """
    try:
        real = given.resolve(strict=True)
        info = real.stat()
    except (OSError, RuntimeError) as exc:  # missing, dangling link, loop, no permission
        return given, None, f"unreadable file: {getattr(exc, 'strerror', None) or exc}"
    if policy.roots and not is_within(real, policy.roots):
        return given, info, OUTSIDE
    if not stat.S_ISREG(info.st_mode):
        return given, info, f"refused: not a regular file ({_kind(info.st_mode)})"
    if info.st_size > policy.max_bytes:
        too_big = f"refused: file of {info.st_size} bytes is larger than max_image_bytes"
        return real, info, f"{too_big} ({policy.max_bytes}); not read"
    return real, info, None


def _read_regular(real: Path, limit: int) -> bytes:
    """The file's bytes, opened without blocking and re-checked as a regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    handle = os.open(real, flags)
    with os.fdopen(handle, "rb", buffering=0) as stream:
        opened = os.fstat(stream.fileno())
        if not stat.S_ISREG(opened.st_mode):  # swapped between the check and the open
            raise BadImage(f"refused: not a regular file ({_kind(opened.st_mode)})")
        data = bytearray()
        while chunk := stream.read(CHUNK):
            data += chunk
            if len(data) > limit:  # grew after the size check
                raise BadImage(f"refused: file grew past max_image_bytes ({limit}) while read")
        return bytes(data)


def read_image_file(given: Path, policy: FilePolicy) -> FileFacts:
    """Admit, read, hash and check one image file; problems are recorded, never raised."""
    given = Path(os.path.abspath(given))
    real, info, refusal = _refusal(given, policy)
    if refusal is not None:
        size = info.st_size if info is not None else 0
        return FileFacts(real, "", size, problem=refusal, refused=True)
    try:
        data = _read_regular(real, policy.max_bytes)
    except BadImage as exc:
        return FileFacts(given, "", 0, problem=str(exc), refused=True)
    except OSError as exc:
        return FileFacts(
            given, "", 0, problem=f"unreadable file: {exc.strerror or exc}", refused=True
        )
    sha = hashlib.sha256(data).hexdigest()
    try:
        return FileFacts(real, sha, len(data), inspect_image_bytes(data, policy.max_pixels))
    except BadImage as exc:
        return FileFacts(real, sha, len(data), problem=str(exc))


class NotServable(Exception):
    """A stored image whose file may not (or can no longer) be served; `status` is HTTP's,
    `public` the reason without server paths (for callers who may not see them)."""

    PUBLIC: ClassVar[dict[int, str]] = {
        403: "the file may not be served",
        410: "the file is gone or no longer an image",
    }

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.public = self.PUBLIC.get(status, "the file cannot be served")


def open_servable(uri: str, roots: Sequence[Path]) -> tuple[BinaryIO, str]:
    """An open stream of a stored image inside `roots` and its real content type.

    Checked when served, not only when stored: the file may have been replaced since
    (e.g. by a link out of the folder, or by something that is no image).
    """
    try:
        real = Path(uri).resolve(strict=True)
    except (OSError, RuntimeError):
        raise NotServable(410, f"{uri} is no longer there") from None
    if not is_within(real, roots):
        raise NotServable(
            403,
            "the image's file lies outside the served folders (data_dir, watch_roots, "
            "image_roots); add its folder to the setting image_roots to serve it",
        )
    try:
        stream = os.fdopen(os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb")
    except OSError as exc:
        raise NotServable(410, f"{uri} cannot be read: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            raise NotServable(403, f"{uri} is not a regular file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(stream) as image:
                fmt = image.format or ""
        mimetype = PILImage.MIME.get(fmt)
        if mimetype is None:
            raise NotServable(410, f"{uri} is no longer an image of a known format")
        stream.seek(0)
        return stream, mimetype
    except NotServable:
        stream.close()
        raise
    except (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError):
        stream.close()
        raise NotServable(410, f"{uri} is no longer an image") from None
