"""Things in real drops that change nothing about the class: fibres, dust, debris,
air bubbles and skin wrinkles. The real plate has fibres and dust in clear drops, so
every class gets them at the same rates and a model learns to look past them."""

from __future__ import annotations

import cv2
import numpy as np

from marco_svc.synth.canvas import Mask
from marco_svc.synth.film import Film, Region
from marco_svc.synth.objects import droplet

# Probability that a drop has each kind of distractor.
RATES = {"fibre": 0.3, "dust": 0.85, "debris": 0.07, "bubble": 0.1, "skin": 0.07}


def draw_distractors(film: Film, region: Region, rng: np.random.Generator) -> list[str]:
    """Draw a random selection; returns the kinds drawn."""
    drawn = []
    draws = {kind: rng.random() < rate for kind, rate in RATES.items()}  # fixed draw order
    for kind, present in draws.items():
        if present:
            _DRAW[kind](film, region, rng)
            drawn.append(kind)
    return drawn


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


_DRAW = {"fibre": _fibre, "dust": _dust, "debris": _debris, "bubble": _bubble, "skin": _skin}
