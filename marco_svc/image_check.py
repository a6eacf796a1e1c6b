"""Cheap checks of an image file's bytes before it is stored: format, size, truncation, bombs."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

JPEG_END = b"\xff\xd9"


class BadImage(ValueError):
    """Bytes that are not a usable image; the message is the recorded reason."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


def inspect_image_bytes(data: bytes, max_pixels: int) -> ImageInfo:
    """Read the header only; reject empty, non-image, truncated JPEG and oversized files."""
    if not data:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt, (width, height) = image.format or "?", image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(f"image larger than the decompression-bomb limit: {exc}") from None
    except UnidentifiedImageError:
        raise BadImage("not an image: no known image format in the file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"unreadable image header: {exc}") from None
    if width * height > max_pixels:
        raise BadImage(f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")
    if fmt == "JPEG" and not data.rstrip(b"\x00").endswith(JPEG_END):
        raise BadImage(f"truncated JPEG: no end-of-image marker after {len(data)} bytes")
    return ImageInfo(fmt, width, height)
