"""The drawing surface: image size, reference units, seeded streams, smooth fields, AA shapes.

Every geometric parameter is drawn in *reference pixels*, the pixels of a full
1224x1024 Rock Imager frame, so one seed gives the same scene at any render size;
`Canvas.u` converts reference pixels to render pixels. Shapes are drawn anti-aliased
into uint8 masks (OpenCV anti-aliases 8-bit images only) and used as float coverage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

FULL_SIZE: tuple[int, int] = (1024, 1224)  # (height, width) of a Rock Imager 1000 frame
_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_ONE = 1 << _SHIFT


def stream(seed: int, *keys: int) -> np.random.Generator:
    """An independent random stream for one part of one render (no global state)."""
    return np.random.default_rng([seed, *keys])


@dataclass(frozen=True)
class Canvas:
    """Render size (height, width) and the mapping from reference to render pixels."""

    height: int
    width: int
    zoom: float = 1.0  # magnification: > 1 shows less of the plate, larger

    @classmethod
    def of(cls, size: Sequence[int], zoom: float = 1.0) -> Canvas:
        height, width = (int(v) for v in size)
        if not (32 <= height <= 8192 and 32 <= width <= 8192):
            raise ValueError(f"size must be (height, width) between 32 and 8192, not {size}")
        if not 0.2 <= zoom <= 5.0:
            raise ValueError(f"zoom must be between 0.2 and 5, not {zoom}")
        return cls(height, width, float(zoom))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @cached_property
    def scale(self) -> float:
        """How much smaller than a full frame the render is (1 at full size, any zoom)."""
        return min(self.height / FULL_SIZE[0], self.width / FULL_SIZE[1])

    @cached_property
    def u(self) -> float:
        """Render pixels per reference pixel."""
        return self.scale * self.zoom

    def points(self, xy: np.ndarray | Sequence[float]) -> np.ndarray:
        """Reference coordinates (origin at the frame centre) in render pixels."""
        centre = np.array([self.width / 2, self.height / 2])
        return centre + np.asarray(xy, dtype=np.float64) * self.u

    @cached_property
    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Reference coordinates of the pixel centres: (x as a row, y as a column)."""
        xs = ((np.arange(self.width, dtype=np.float32) + 0.5) - self.width / 2) / self.u
        ys = ((np.arange(self.height, dtype=np.float32) + 0.5) - self.height / 2) / self.u
        return xs[None, :], ys[:, None]

    def smooth_field(self, rng: np.random.Generator, cells: tuple[int, int]) -> np.ndarray:
        """A smooth random field of about unit spread: a coarse Gaussian grid, cubic upsampled."""
        coarse = rng.standard_normal(cells).astype(np.float32)
        return cv2.resize(coarse, (self.width, self.height), interpolation=cv2.INTER_CUBIC)

    def smooth(self, make: Callable[[Canvas], np.ndarray]) -> np.ndarray:
        """A smooth field computed on a canvas up to 4x coarser, resized to this one."""
        factor = max(1, min(4, self.height // 64))
        if factor == 1:
            return make(self)
        coarse = make(Canvas(self.height // factor, self.width // factor, self.zoom))
        return cv2.resize(coarse, (self.width, self.height), interpolation=cv2.INTER_LINEAR)

    def blur(self, image: np.ndarray, sigma_ref: float) -> np.ndarray:
        """Gaussian blur with sigma in reference pixels (a no-op below a fifth of a pixel)."""
        sigma = sigma_ref * self.u
        if sigma < 0.2:
            return image
        return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass
class Mask:
    """A uint8 coverage mask over a rectangle of the image (x0, y0 = its top-left pixel)."""

    x0: int
    y0: int
    data: np.ndarray

    @classmethod
    def around(cls, canvas: Canvas, points: np.ndarray, pad: float) -> Mask | None:
        """An empty mask over the points' bounding box plus `pad` render pixels, clipped."""
        lo = np.floor(points.min(axis=0) - pad).astype(int)
        hi = np.ceil(points.max(axis=0) + pad).astype(int) + 1
        x0, y0 = max(lo[0], 0), max(lo[1], 0)
        x1, y1 = min(hi[0], canvas.width), min(hi[1], canvas.height)
        if x1 <= x0 or y1 <= y0:
            return None
        return cls(x0, y0, np.zeros((y1 - y0, x1 - x0), np.uint8))

    @classmethod
    def full(cls, canvas: Canvas) -> Mask:
        return cls(0, 0, np.zeros(canvas.shape, np.uint8))

    @property
    def slices(self) -> tuple[slice, slice]:
        h, w = self.data.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)

    def coverage(self) -> np.ndarray:
        return self.data.astype(np.float32) * (1.0 / 255.0)

    def _fixed(self, points: np.ndarray) -> np.ndarray:
        shifted = np.asarray(points, dtype=np.float64) - (self.x0, self.y0)
        return np.round(shifted * _ONE).astype(np.int32).reshape(-1, 1, 2)

    def polygon(self, points: np.ndarray, value: float = 1.0) -> None:
        """Anti-aliased filled polygon (render pixels)."""
        cv2.fillPoly(self.data, [self._fixed(points)], _level(value), cv2.LINE_AA, _SHIFT)

    def polyline(
        self, points: np.ndarray, thickness: float, value: float = 1.0, closed: bool = False
    ) -> None:
        """Anti-aliased line strip; lines thinner than a pixel fade instead of vanishing."""
        width = max(round(thickness), 1)
        strength = value * min(thickness, 1.0)
        cv2.polylines(
            self.data, [self._fixed(points)], closed, _level(strength), width, cv2.LINE_AA, _SHIFT
        )

    def speck(self, points: np.ndarray, value: float = 1.0) -> None:
        """A small polygon; below a pixel, a disc of its area (so it fades, not fattens)."""
        centre = points.mean(axis=0)
        if np.abs(points - centre).max() >= 1.0:
            self.polygon(points, value)
            return
        x, y = points[:, 0], points[:, 1]
        area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
        self.circle(centre, np.sqrt(area / np.pi), value)

    def circle(self, centre: Sequence[float], radius: float, value: float = 1.0) -> None:
        """Anti-aliased disc; discs below a pixel fade with their area."""
        if radius < 0.6:
            value *= (radius / 0.6) ** 2
            radius = 0.6
        c = self._fixed(np.asarray(centre, dtype=np.float64)).ravel()
        cv2.circle(
            self.data,
            (int(c[0]), int(c[1])),
            round(radius * _ONE),
            _level(value),
            -1,
            cv2.LINE_AA,
            _SHIFT,
        )


def _level(value: float) -> int:
    return round(255 * min(max(value, 0.0), 1.0))


def grain(canvas: Canvas, rng: np.random.Generator, sigma_ref: float) -> np.ndarray:
    """Zero-mean texture of correlation length `sigma_ref` (reference pixels).

    Its spread is 1 at full size and shrinks as a downscaled full-size texture would,
    so a small render looks like a real image resized, not like a noisier one.
    """
    sigma = sigma_ref * canvas.u
    factor = int(min(sigma // 2, 4)) if sigma >= 4 else 1
    if factor > 1:  # smooth texture: draw it coarse and resize
        coarse = Canvas(canvas.height // factor, canvas.width // factor, canvas.zoom)
        small = grain(coarse, rng, sigma_ref * canvas.u / coarse.u / factor)
        return cv2.resize(small, (canvas.width, canvas.height), interpolation=cv2.INTER_LINEAR)
    noise = rng.standard_normal(canvas.shape, dtype=np.float32)
    if sigma >= 0.5:
        noise = cv2.GaussianBlur(noise, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        return noise * np.float32(2.0 * np.sqrt(np.pi) * sigma)
    return noise * np.float32(min(1.0, 2.0 * np.sqrt(np.pi) * sigma))
