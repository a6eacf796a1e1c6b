"""Checks of an image file's bytes before it is stored: format, size, truncation, bombs, and a
full decode (at reduced size for JPEGs) that catches corrupt and cut-short data."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import simplejpeg
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
    """Reject empty, non-image, oversized, truncated and corrupt files; decode the whole image
    (JPEGs at 1/8 scale, strictly: libjpeg's corrupt-data warnings are errors)."""
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
    _decode_all(data, fmt)
    return ImageInfo(fmt, width, height)


def _decode_all(data: bytes, fmt: str) -> None:
    """Decode every pixel, or raise BadImage with the decoder's complaint."""
    try:
        if fmt == "JPEG" and simplejpeg.is_jpeg(data):
            colorspace = simplejpeg.decode_jpeg_header(data)[2]
            target = "CMYK" if colorspace in ("CMYK", "YCCK") else "GRAY"
            simplejpeg.decode_jpeg(data, target, strict=True, min_height=1, min_width=1)
            return
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise BadImage(f"corrupt image data: {exc}") from None
