"""What the service writes on disk, and with which permissions: one policy for all of it.

The data folder is 0750 and files in it 0640 (umask 027 for the service process, and
explicit modes where a temporary file would otherwise stay 0600). With the setting
`data_group`, the data folder belongs to that group and carries the setgid bit, so
every folder and file created below it belongs to the group too (e.g. a web server's
group that serves images, or the facility's admins).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

DIR_MODE = 0o750
FILE_MODE = 0o640
UMASK = 0o027


class FilePolicyError(ValueError):
    """A permission setting that cannot be applied (e.g. an unknown group)."""


def apply_umask() -> None:
    """New files 0640 and folders 0750 for the rest of this process."""
    os.umask(UMASK)


def _group_id(group: str) -> int:
    if group.isdigit():
        return int(group)
    import grp  # POSIX only; a Windows imager PC has no data_group

    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise FilePolicyError(f"setting data_group: no group named {group!r}") from None


def prepare_data_dir(path: Path, group: str = "") -> None:
    """Create the data folder (and its parents) and give it the policy's mode and group."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    info = path.stat()
    mode = DIR_MODE
    if group:
        gid = _group_id(group)
        if info.st_gid != gid:
            os.chown(path, -1, gid)
        mode |= stat.S_ISGID
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)


def atomic_write(
    target: Path, chunks: Iterable[bytes] | bytes, sync: bool = True, mode: int = FILE_MODE
) -> Path:
    """Write `target` whole or not at all (a reader never sees half a file), mode 0640
    unless `mode` says otherwise."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            if hasattr(os, "fchmod"):  # POSIX; Windows has no such modes
                os.fchmod(out.fileno(), mode)
            for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
                out.write(chunk)
            out.flush()
            if sync:
                os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def content_path(folder: Path, digest: str, name: str = "") -> Path:
    """Where bytes with sha256 `digest` are kept: `folder/<digest[:2]>/<digest><suffix>`,
    the suffix of `name` when it is an image's (`.jpg`, `.png`, ...)."""
    from imager_adapters.registry import IMAGE_SUFFIXES

    suffix = Path(name).suffix.lower()
    return folder / digest[:2] / f"{digest}{suffix if suffix in IMAGE_SUFFIXES else ''}"


def store_content(folder: Path, digest: str, name: str, chunks: Iterable[bytes] | bytes) -> Path:
    """Keep bytes at their content address, written once and atomically: identical bytes
    share the file. The caller vouches that `digest` is the bytes' sha256."""
    target = content_path(folder, digest, name)
    if target.exists():
        return target
    return atomic_write(target, chunks)
