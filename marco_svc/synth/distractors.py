"""Things in real drops that change nothing about the class: fibres, dust, debris,
air bubbles, skin wrinkles, dark round particles, oil droplets, plate scratches and
moulding marks. The real plate has fibres and dust in clear drops, so every class gets
them at the same rates and a model learns to look past them. Several are hard
negatives: round dark particles and oil droplets are small and contrasty like small
crystals, scratches are straight like needles, but none has facets. (The drop edge,
the other thing often taken for crystals, is in every render already.)

`draw_contamination` is the bad-drop "contaminated" variant's contents: a drop full of
dark particles and debris.
"""

from __future__ import annotations

import cv2
import numpy as np

from marco_svc.synth.canvas import Mask
from marco_svc.synth.film import Film, Region
from marco_svc.synth.objects import droplet

# Probability that a drop has each kind of distractor (draws happen in this order).
RATES = {
    "fibre": 0.3,
    "dust": 0.85,
    "debris": 0.07,
    "bubble": 0.1,
    "skin": 0.07,
    "particles": 0.2,
    "oil": 0.1,
    "scratch": 0.15,
    "moulding": 0.15,
}


def draw_distractors(film: Film, region: Region, rng: np.random.Generator) -> list[str]:
    """Draw a random selection; returns the kinds drawn."""
    drawn = []
    draws = {kind: rng.random() < rate for kind, rate in RATES.items()}  # fixed draw order
    for kind, present in draws.items():
        if present:
            _DRAW[kind](film, region, rng)
            drawn.append(kind)
    return drawn


def draw_one(film: Film, region: Region, rng: np.random.Generator, kind: str) -> None:
    """Draw one kind of distractor (a key of RATES)."""
    if kind not in _DRAW:
        raise ValueError(f"unknown distractor {kind!r} (known: {', '.join(RATES)})")
    _DRAW[kind](film, region, rng)


def _fibre(film: Film, region: Region, rng: np.random.Generator) -> None:
    """Long thin gently curved dark lines, often crossing the whole drop and the wall."""
    for _ in range(int(rng.integers(1, 3))):
        if rng.random() < 0.6:  # a chord across the drop
            a = rng.uniform(0, 2 * np.pi)
            b = a + np.pi + rng.normal(0, 0.6)
            reach = region.drop_radius * rng.uniform(0.95, 1.4)
            start = np.array([region.cx + reach * np.cos(a), region.cy + reach * np.sin(a)])
            end = np.array([region.cx + reach * np.cos(b), region.cy + reach * np.sin(b)])
        else:  # a shorter loose one inside
            start = np.asarray(region.sample(rng))
            length = rng.uniform(40, 320)
            a = rng.uniform(0, 2 * np.pi)
            end = start + length * np.array([np.cos(a), np.sin(a)])
        along = end - start
        normal = np.array([-along[1], along[0]]) / (np.linalg.norm(along) + 1e-9)
        t = np.linspace(0, 1, 80)[:, None]
        bend = rng.normal(0, 0.08) * np.linalg.norm(along)
        wiggle = rng.normal(0, 3.0) * np.sin(2 * np.pi * (t * rng.uniform(1, 4) + rng.uniform()))
        path = start + t * along + normal * (4 * t * (1 - t) * bend + wiggle)
        pts = film.canvas.points(path)
        mask = Mask.around(film.canvas, pts, pad=4)
        if mask is None:
            continue
        mask.polyline(pts, rng.uniform(1.0, 3.0) * film.canvas.u)
        film.absorb(mask, (0.5, 0.52, 0.66), rng.uniform(0.5, 0.95))


def _dust(film: Film, region: Region, rng: np.random.Generator) -> None:
    """Small dark irregular specks, a few of them out of focus."""
    canvas = film.canvas
    sharp, soft = Mask.full(canvas), Mask.full(canvas)
    n = int(rng.integers(1, 40))
    for _ in range(n):
        x, y = region.sample(rng, margin=-0.1 * region.drop_radius)
        blurred = rng.random() < 0.2
        size = rng.uniform(3, 12) if blurred else np.exp(rng.uniform(np.log(0.8), np.log(5)))
        sides = int(rng.integers(4, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, sides))
        radii = size * rng.uniform(0.4, 1.0, sides)
        poly = canvas.points(np.stack([x + radii * np.cos(angles), y + radii * np.sin(angles)], 1))
        if blurred:
            soft.speck(poly, rng.uniform(0.1, 0.3))
        else:
            sharp.speck(poly, rng.uniform(0.35, 0.85))
    soft.data = cv2.GaussianBlur(soft.data, (0, 0), max(3.0 * canvas.u, 0.5))
    film.absorb(sharp, (0.25, 0.25, 0.32))
    film.absorb(soft, (0.4, 0.4, 0.45))


def _debris(film: Film, region: Region, rng: np.random.Generator) -> None:
    """An irregular, non-convex brownish particle with a ragged outline."""
    canvas = film.canvas
    x, y = region.sample(rng, margin=40)
    size = rng.uniform(12, 60)
    sides = int(rng.integers(10, 22))
    angles = np.sort(rng.uniform(0, 2 * np.pi, sides))
    radii = size * np.clip(rng.uniform(0.35, 1.0, sides) + rng.normal(0, 0.15, sides), 0.2, 1.2)
    poly = canvas.points(np.stack([x + radii * np.cos(angles), y + radii * np.sin(angles)], 1))
    body = Mask.around(canvas, poly, pad=3)
    if body is None:
        return
    body.polygon(poly)
    texture = 0.6 + 0.4 * rng.uniform(0, 1, body.data.shape).astype(np.float32)
    texture = cv2.GaussianBlur(texture, (0, 0), max(1.5 * canvas.u, 0.5))
    darkness = rng.uniform(0.5, 0.9)
    colour = np.asarray((0.55, 0.42, 0.22), np.float32)
    cover = body.coverage()[..., None] * texture[..., None] * np.float32(darkness)
    film.multiply(*body.slices, 1.0 + cover * (colour - 1.0))


def _bubble(film: Film, region: Region, rng: np.random.Generator) -> None:
    """Air bubbles: a thick black rim around a bright centre."""
    for _ in range(int(rng.integers(1, 4))):
        radius = rng.uniform(8, 70)
        centre = region.sample(rng, margin=radius)
        droplet(
            film,
            centre,
            radius,
            rim=rng.uniform(0.7, 0.95),
            focus=0.25,
            body=1.02,
            rim_width=rng.uniform(0.12, 0.25),
        )


def _skin(film: Film, region: Region, rng: np.random.Generator) -> None:
    """Faint wrinkles of a protein skin: a patch of wavy near-parallel lines."""
    canvas = film.canvas
    cx, cy = region.sample(rng, margin=80)
    angle = rng.uniform(0, np.pi)
    length = rng.uniform(80, max(0.9 * region.radius, 80))
    lines = Mask.full(canvas)
    t = np.linspace(-0.5, 0.5, 60)
    direction = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    period = rng.uniform(0.3, 1.2)
    for _ in range(int(rng.integers(3, 12))):
        offset = rng.normal(0, length * 0.25)
        wave = rng.uniform(3, 12) * np.sin(2 * np.pi * t / period + rng.uniform(0, 6.3))
        path = np.array([cx, cy]) + np.outer(t * length * rng.uniform(0.5, 1.0), direction)
        path += np.outer(offset + wave, normal)
        lines.polyline(canvas.points(path), max(rng.uniform(1.5, 3.0) * canvas.u, 0.5))
    lines.data = cv2.GaussianBlur(lines.data, (0, 0), max(1.2 * canvas.u, 0.5))
    film.absorb(lines, (0.75, 0.75, 0.8), rng.uniform(0.3, 0.7))


def _ellipse(centre: tuple[float, float], radius: float, aspect: float, angle: float) -> np.ndarray:
    """16 points (reference pixels) around an ellipse."""
    t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    x, y = radius * np.cos(t), radius * aspect * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([centre[0] + c * x - s * y, centre[1] + s * x + c * y], axis=1)


def dark_particles(
    film: Film, region: Region, rng: np.random.Generator, n: int, radii: tuple[float, float]
) -> None:
    """n dark round or oval particles (radius range in reference pixels), soft-edged."""
    canvas = film.canvas
    mask = Mask.full(canvas)
    for _ in range(n):
        centre = region.sample(rng, margin=-0.08 * region.drop_radius)
        radius = float(np.exp(rng.uniform(np.log(radii[0]), np.log(radii[1]))))
        oval = _ellipse(centre, radius, rng.uniform(0.6, 1.0), rng.uniform(0, np.pi))
        mask.speck(canvas.points(oval), rng.uniform(0.45, 0.9))
    soft = rng.uniform(0.8, 2.5) * canvas.u
    if soft >= 0.3:
        mask.data = cv2.GaussianBlur(mask.data, (0, 0), soft)
    film.absorb(mask, (0.2, 0.19, 0.22))


def _particles(film: Film, region: Region, rng: np.random.Generator) -> None:
    """A few to a dozen or more dark round specks, 5-30 reference pixels across."""
    n = int(np.exp(rng.uniform(np.log(2), np.log(16))))
    dark_particles(film, region, rng, n, (2.5, 15.0))


def _oil(film: Film, region: Region, rng: np.random.Generator) -> None:
    """A few small oil droplets: thin refractive rings with a bright middle."""
    for _ in range(int(rng.integers(1, 9))):
        radius = rng.uniform(3, 15)
        droplet(
            film,
            region.sample(rng, margin=radius),
            radius,
            rim=rng.uniform(0.3, 0.6),
            focus=rng.uniform(0.1, 0.4),
            body=rng.uniform(0.97, 1.02),
        )


def _scratch(film: Film, region: Region, rng: np.random.Generator) -> None:
    """Faint long straight or gently curved lines in the plate, running past the drop."""
    canvas = film.canvas
    for _ in range(int(rng.integers(1, 4))):
        a = rng.uniform(0, 2 * np.pi)
        b = a + np.pi + rng.normal(0, 0.5)
        reach = region.drop_radius * rng.uniform(1.1, 2.0)
        start = np.array([region.cx + reach * np.cos(a), region.cy + reach * np.sin(a)])
        end = np.array([region.cx + reach * np.cos(b), region.cy + reach * np.sin(b)])
        along = end - start
        normal = np.array([-along[1], along[0]]) / (np.linalg.norm(along) + 1e-9)
        t = np.linspace(0, 1, 40)[:, None]
        bend = rng.normal(0, 0.03) * np.linalg.norm(along) if rng.random() < 0.5 else 0.0
        path = canvas.points(start + t * along + normal * 4 * t * (1 - t) * bend)
        mask = Mask.around(canvas, path, pad=4)
        if mask is None:
            continue
        mask.polyline(path, rng.uniform(0.8, 2.5) * canvas.u)
        shade = (0.55, 0.55, 0.6) if rng.random() < 0.7 else (1.6, 1.6, 1.6)
        film.absorb(mask, shade, rng.uniform(0.1, 0.35))


def _moulding(film: Film, region: Region, rng: np.random.Generator) -> None:
    """A mark moulded into the plastic: faint concentric arcs, or a small ring (dimple)."""
    if rng.random() < 0.4:
        radius = rng.uniform(8, 40)
        centre = region.sample(rng, margin=-0.15 * region.drop_radius)
        rim, focus = rng.uniform(0.1, 0.3), rng.uniform(0.03, 0.12)
        droplet(film, centre, radius, rim=rim, focus=focus, body=1.0, rim_width=0.15)
        return
    canvas = film.canvas
    dark, light = Mask.full(canvas), Mask.full(canvas)
    cx, cy = region.cx + rng.normal(0, 15), region.cy + rng.normal(0, 15)
    for _ in range(int(rng.integers(1, 5))):
        radius = region.drop_radius * rng.uniform(0.35, 1.05)
        start = rng.uniform(0, 2 * np.pi)
        t = start + np.linspace(0, rng.uniform(0.5, 2.5), 60)
        width = rng.uniform(2.0, 6.0)
        for mask, r in ((dark, radius), (light, radius + width)):
            arc = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)
            mask.polyline(canvas.points(arc), width * canvas.u)
    soft = max(1.2 * canvas.u, 0.5)
    dark.data = cv2.GaussianBlur(dark.data, (0, 0), soft)
    light.data = cv2.GaussianBlur(light.data, (0, 0), soft)
    strength = rng.uniform(0.15, 0.4)
    film.absorb(dark, (0.5, 0.5, 0.52), strength)
    film.absorb(light, (1.5, 1.5, 1.5), strength * 0.7)


def draw_contamination(film: Film, region: Region, rng: np.random.Generator) -> None:
    """A drop full of dark round particles and debris (bad drop, MARCO "Other")."""
    n = int(np.exp(rng.uniform(np.log(60), np.log(300))))
    dark_particles(film, region, rng, n, (2.0, 20.0))
    for _ in range(int(rng.integers(1, 8))):
        _debris(film, region, rng)
    for _ in range(int(rng.integers(0, 3))):
        _fibre(film, region, rng)
    _dust(film, region, rng)


_DRAW = {
    "fibre": _fibre,
    "dust": _dust,
    "debris": _debris,
    "bubble": _bubble,
    "skin": _skin,
    "particles": _particles,
    "oil": _oil,
    "scratch": _scratch,
    "moulding": _moulding,
}
