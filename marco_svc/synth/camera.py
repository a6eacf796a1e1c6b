"""The camera: exposure, sensor noise, 8-bit quantisation and JPEG compression."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from marco_svc.synth.canvas import Canvas, grain

# Below this scale a render stands for a resized frame: JPEG blocks of the full frame
# would have vanished, so no compression is simulated.
JPEG_MIN_SCALE = 0.75


def expose(image: np.ndarray, gain: float) -> np.ndarray:
    """Scale the light (in linear units) by `gain`; display values stay display values."""
    if abs(gain - 1.0) < 1e-6:
        return image
    linear = np.power(np.clip(image, 0.0, None), 2.2)
    return np.power(linear * np.float32(gain), 1 / 2.2).astype(np.float32)


def add_noise(
    canvas: Canvas, image: np.ndarray, spread: float, rng: np.random.Generator
) -> np.ndarray:
    """Sensor noise: mostly luminance, a little chroma, stronger in bright parts."""
    luma = grain(canvas, rng, 0.7) * np.float32(spread)
    chroma = grain(canvas, rng, 1.5) * np.float32(spread * 0.25)
    level = np.sqrt(np.clip(image.mean(axis=2), 0.0, 1.0) + 0.02)[..., None]
    noise = luma[..., None] + chroma[..., None] * np.asarray((1.0, -0.4, -0.6), np.float32)
    return image + noise * level * np.float32(1.15)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def encode_jpeg(pixels: np.ndarray, quality: int, comment: str = "") -> bytes:
    """JPEG with 4:2:0 chroma subsampling like the imager's, carrying `comment` (COM + EXIF)."""
    image = Image.fromarray(pixels, "RGB")
    buffer = io.BytesIO()
    extra: dict = {}
    if comment:
        exif = Image.Exif()
        exif[0x010E] = comment  # ImageDescription
        exif[0x0131] = "marco-svc synthetic drop generator"  # Software
        extra = {"comment": comment.encode("utf-8"), "exif": exif.tobytes()}
    image.save(buffer, format="JPEG", quality=quality, subsampling="4:2:0", **extra)
    return buffer.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(array[:, :, ::-1])
