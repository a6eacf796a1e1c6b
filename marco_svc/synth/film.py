"""What the drop's contents do to the light: one multiplicative RGB transmittance map.

Values below 1 absorb or scatter (dark edges, precipitate), above 1 focus light
(bright facets, droplet centres). Objects draw into small patches and multiply in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marco_svc.synth.canvas import Canvas, Mask

Colour = tuple[float, float, float]
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in render pixels


@dataclass(frozen=True)
class Region:
    """Where contents go (reference pixels): objects within `radius`, textures to `drop_radius`."""

    cx: float
    cy: float
    radius: float
    drop_radius: float

    def sample(self, rng: np.random.Generator, margin: float = 0.0) -> tuple[float, float]:
        """A uniform random point at least `margin` inside the circle."""
        reach = max(self.radius - margin, 0.0)
        angle, dist = rng.uniform(0, 2 * np.pi), reach * np.sqrt(rng.uniform(0, 1))
        return (self.cx + dist * np.cos(angle), self.cy + dist * np.sin(angle))

    def sample_many(self, rng: np.random.Generator, n: int, margin: float = 0.0) -> np.ndarray:
        reach = max(self.radius - margin, 0.0)
        angle = rng.uniform(0, 2 * np.pi, n)
        dist = reach * np.sqrt(rng.uniform(0, 1, n))
        return np.stack([self.cx + dist * np.cos(angle), self.cy + dist * np.sin(angle)], axis=1)


class Film:
    """An HxWx3 transmittance map, 1 where the drop is empty."""

    def __init__(self, canvas: Canvas) -> None:
        self.canvas = canvas
        self.t = np.ones((*canvas.shape, 3), np.float32)

    def absorb(self, mask: Mask, colour: Colour, strength: float = 1.0) -> None:
        """Where the mask covers, move transmittance towards `colour` (RGB, 1 = no effect)."""
        cover = mask.coverage() * np.float32(strength)
        change = np.asarray(colour, np.float32) - 1.0
        self.t[mask.slices] *= 1.0 + cover[..., None] * change

    def multiply(self, rows: slice, cols: slice, factor: np.ndarray) -> None:
        """Multiply a block (rows, cols) by an (h, w, 3) or (h, w) factor."""
        if factor.ndim == 2:
            factor = factor[..., None]
        self.t[rows, cols] *= factor

    def optical_density(self, density: np.ndarray, colour: Colour) -> None:
        """Absorb by Beer-Lambert: t *= exp(-density * colour), density HxW."""
        k = np.asarray(colour, np.float32)
        self.t *= np.exp(-density[..., None] * k)

    def box(self, points: np.ndarray, pad: float = 0.0) -> Box:
        """The bounding box (render pixels) of points, padded and clipped to the image."""
        lo = points.min(axis=0) - pad
        hi = points.max(axis=0) + pad
        return (
            float(max(lo[0], 0.0)),
            float(max(lo[1], 0.0)),
            float(min(hi[0], self.canvas.width)),
            float(min(hi[1], self.canvas.height)),
        )
