"""Real clear-drop photos as backgrounds: load a folder, find the drop in each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from imager_adapters.registry import IMAGE_SUFFIXES


@dataclass(frozen=True)
class Background:
    """A real image (uint8 RGB) and the drop in it: centre (x, y) and radius in its pixels."""

    image: np.ndarray
    centre: tuple[float, float]
    radius: float
    name: str = ""

    @classmethod
    def of(cls, image: np.ndarray, name: str = "") -> Background:
        """Wrap an image, finding its drop."""
        image = _rgb(image)
        cx, cy, radius = detect_drop(image)
        return cls(image, (cx, cy), radius, name)


def _rgb(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or array.dtype != np.uint8:
        raise ValueError(
            f"a background must be uint8 RGB (h, w, 3), not {array.dtype} {array.shape}"
        )
    return np.ascontiguousarray(array[..., :3])


def detect_drop(image: np.ndarray) -> tuple[float, float, float]:
    """Centre (x, y) and radius of the bright drop region nearest the image centre.

    Otsu threshold of a smoothed, downscaled grey image; the bright component that
    holds (or is nearest) the centre, as a circle of equal area. Falls back to a
    centred circle of 40% of the short side when nothing sensible is found.
    """
    h, w = image.shape[:2]
    scale = 256.0 / max(h, w)
    small = cv2.resize(
        image, (max(int(w * scale), 8), max(int(h * scale), 8)), interpolation=cv2.INTER_AREA
    )
    grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), (0, 0), 2.0)
    _, bright = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    bright = cv2.morphologyEx(bright, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    count, _, stats, centroids = cv2.connectedComponentsWithStats(bright)
    fallback = (w / 2.0, h / 2.0, 0.4 * min(h, w))
    if count <= 1:
        return fallback
    sh, sw = grey.shape
    middle = np.array([sw / 2.0, sh / 2.0])
    best, best_score = 0, -np.inf
    for k in range(1, count):
        area = stats[k, cv2.CC_STAT_AREA]
        if area < 0.03 * sh * sw:
            continue
        score = area / (1.0 + np.linalg.norm(centroids[k] - middle) / (0.1 * sw))
        if score > best_score:
            best, best_score = k, score
    if best == 0:
        return fallback
    cx, cy = centroids[best]
    radius = np.sqrt(stats[best, cv2.CC_STAT_AREA] / np.pi)
    return (float(cx / scale), float(cy / scale), float(radius / scale))


def backgrounds_from_folder(path: str | Path, limit: int | None = None) -> list[Background]:
    """Every image under `path` (sorted, recursively) as a Background with its drop found."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"no images in {root}")
    found = []
    for file in files[:limit]:
        with Image.open(file) as img:
            found.append(Background.of(np.asarray(img.convert("RGB")), name=file.name))
    return found
