"""Thumbnails: each image's small JPEG (at most 256 px a side), made once from the checked
file and kept in `<data_dir>/thumbnails/`, so a plate page never ships full frames."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

from PIL import Image as PILImage

from marco_svc.file_access import NotServable, open_servable
from marco_svc.file_store import atomic_write

SIZE = 256
QUALITY = 82


def thumbnail_path(data_dir: Path, image_id: int, sha256: str) -> Path:
    """Where the thumbnail of this content lives (new content: a new file)."""
    return data_dir / "thumbnails" / f"{image_id % 1000:03d}" / f"{image_id}-{sha256[:12]}.jpg"


def thumbnail(data_dir: Path, image_id: int, uri: str, sha256: str, roots: Sequence[Path]) -> Path:
    """The thumbnail file, made now if missing (NotServable when the image may not be read)."""
    target = thumbnail_path(data_dir, image_id, sha256)
    if target.is_file():
        return target
    stream, _ = open_servable(uri, roots)
    with stream, warnings.catch_warnings():
        warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
        try:
            with PILImage.open(stream) as image:
                image.draft("RGB", (SIZE, SIZE))  # JPEG: decode at 1/2..1/8 scale
                small = image.convert("RGB")
                small.thumbnail((SIZE, SIZE))
        except (OSError, ValueError, PILImage.DecompressionBombError):
            raise NotServable(410, f"{uri} is no longer an image") from None
    out = io.BytesIO()
    small.save(out, format="JPEG", quality=QUALITY, optimize=True)
    return atomic_write(target, out.getvalue(), sync=False)
