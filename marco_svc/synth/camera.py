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
# The share of sensor noise that survives the imager's JPEG compression (measured on
# renders: high-pass noise before and after); applied instead when none is simulated.
JPEG_NOISE_KEPT = 0.7


def expose(image: np.ndarray, gain: float) -> np.ndarray:
    """Scale the light by `gain` (linear units); with display = linear ** (1/2.2) that is
    a multiplication of display values by gain ** (1/2.2)."""
    if abs(gain - 1.0) < 1e-6:
        return image
    return np.maximum(image, 0.0) * np.float32(gain ** (1 / 2.2))


def add_noise(
    canvas: Canvas, image: np.ndarray, spread: float, rng: np.random.Generator
) -> np.ndarray:
    """Sensor noise: mostly luminance, a little chroma, stronger in bright parts."""
    luma = grain(canvas, rng, 0.4) * np.float32(spread)
    chroma = grain(canvas, rng, 0.8) * np.float32(spread * 0.25)
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
