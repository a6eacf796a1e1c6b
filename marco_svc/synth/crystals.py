"""Crystals: convex polyhedra seen from above, needles, plates and microcrystal showers.

A crystal is a convex solid (block, prism, bipyramid, capped prism, rhomb, tablet)
turned at random and projected: its visible faces are shaded by how much they tilt
away from the optical axis and tinted with birefringent interference colours; its
outline and internal facet edges are sharp dark lines. Every function returns the
bounding boxes (render pixels) of what it drew.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from marco_svc.synth.canvas import Mask
from marco_svc.synth.film import Box, Film, Region


@dataclass(frozen=True)
class Solid:
    vertices: np.ndarray  # (k, 3)
    faces: tuple[tuple[int, ...], ...]


def _ring(n: int, z: float, phase: float = 0.0) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(angles), np.sin(angles), np.full(n, z)], axis=1)


def prism(n: int, half_height: float, cap: float = 0.0) -> Solid:
    """An n-sided prism along z; with cap > 0 both ends are pyramids of that height."""
    top, bottom = _ring(n, half_height), _ring(n, -half_height)
    faces: list[tuple[int, ...]] = [(i, (i + 1) % n, n + (i + 1) % n, n + i) for i in range(n)]
    vertices = [top, bottom]
    if cap > 0:
        vertices.append(np.array([[0, 0, half_height + cap], [0, 0, -half_height - cap]]))
        apex_top, apex_bottom = 2 * n, 2 * n + 1
        faces += [(i, apex_top, (i + 1) % n) for i in range(n)]
        faces += [(n + (i + 1) % n, apex_bottom, n + i) for i in range(n)]
    else:
        faces += [tuple(range(n)), tuple(range(2 * n - 1, n - 1, -1))]
    return Solid(np.concatenate(vertices), tuple(faces))


def bipyramid(n: int, half_height: float) -> Solid:
    ring = _ring(n, 0.0)
    apexes = np.array([[0, 0, half_height], [0, 0, -half_height]])
    faces = [(i, (i + 1) % n, n) for i in range(n)] + [((i + 1) % n, i, n + 1) for i in range(n)]
    return Solid(np.concatenate([ring, apexes]), tuple(faces))


HABITS = ("block", "prism", "bipyramid", "capped prism", "rhomb", "tablet")


def habit_solid(rng: np.random.Generator, habit: str) -> Solid:
    """A unit-sized solid of the habit, stretched along its own axes."""
    u = rng.uniform
    if habit == "block":
        solid = prism(4, 1.0)
        scale = (u(0.8, 1.6), u(0.8, 1.6), u(0.6, 1.8))
    elif habit == "prism":
        solid = prism(int(rng.choice([4, 6])), u(1.2, 3.0))
        scale = (1.0, u(0.7, 1.0), 1.0)
    elif habit == "bipyramid":
        solid = bipyramid(int(rng.choice([4, 6])), u(1.0, 1.8))
        scale = (1.0, u(0.8, 1.0), 1.0)
    elif habit == "capped prism":
        solid = prism(int(rng.choice([4, 6])), u(0.5, 2.0), cap=u(0.5, 1.2))
        scale = (1.0, u(0.8, 1.0), 1.0)
    elif habit == "rhomb":
        solid = prism(4, 1.0)
        shear = np.array([[1, u(-0.6, 0.6), u(-0.5, 0.5)], [0, 1, u(-0.5, 0.5)], [0, 0, 1]])
        return Solid(solid.vertices @ shear.T, solid.faces)
    elif habit == "tablet":
        solid = prism(int(rng.choice([4, 6, 6])), u(0.05, 0.2))
        scale = (u(0.8, 1.3), u(0.6, 1.0), 1.0)
    else:
        raise ValueError(f"unknown crystal habit {habit!r}")
    return Solid(solid.vertices * np.asarray(scale), solid.faces)


def rotation(rng: np.random.Generator, tilt: float) -> np.ndarray:
    """A rotation: spin about the optical axis, then tip by up to `tilt` radians."""
    a, b, c = rng.uniform(0, 2 * np.pi), rng.uniform(-tilt, tilt), rng.uniform(-tilt, tilt)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    ry = np.array([[np.cos(c), 0, np.sin(c)], [0, 1, 0], [-np.sin(c), 0, np.cos(c)]])
    return rz @ rx @ ry


def interference_tint(hue: float, saturation: float) -> np.ndarray:
    """A birefringence colour: 1 + s * (cos h, cos h-120, cos h+120)."""
    shifts = np.array([0.0, -2.0944, 2.0944])
    return 1.0 + saturation * np.cos(hue + shifts)


@dataclass(frozen=True)
class Look:
    """How a crystal shows in transmitted light."""

    body: float  # transmittance of a face normal to the axis
    relief: float  # how much tilted faces darken
    hue: float
    tint: float  # birefringence saturation
    amber: float  # protein/dye colour
    edge: float  # darkness of the outline
    inner_edge: float  # darkness of internal facet edges
    edge_width: float  # reference pixels
    halo: float  # bright Becke line just outside the outline
    rim: float  # darkening of a band just inside the outline (refraction at the edges)
    rim_width: float  # reference pixels
    ramp: float  # brightness gradient across each face


def sample_look(rng: np.random.Generator, faint: bool = False) -> Look:
    u = rng.uniform
    tint = u(0.0, 0.06) if rng.random() < 0.7 else u(0.06, 0.3)
    return Look(
        body=u(0.92, 1.06) if faint else u(0.8, 1.06),
        relief=u(0.15, 0.35) if faint else u(0.3, 0.7),
        hue=u(0, 2 * np.pi),
        tint=tint * (0.6 if faint else 1.0),
        amber=u(0.0, 0.25) if rng.random() < 0.3 else 0.0,
        edge=u(0.3, 0.6) if faint else u(0.55, 0.9),
        inner_edge=u(0.1, 0.3) if faint else u(0.2, 0.55),
        edge_width=u(1.2, 2.2) if faint else u(1.4, 3.2),
        halo=u(0.0, 0.15),
        rim=u(0.1, 0.3) if faint else u(0.2, 0.55),
        rim_width=u(3.0, 12.0),
        ramp=u(0.0, 0.25),
    )


_LIGHT = np.array([-0.45, -0.35, 0.0])


def draw_solid(
    film: Film,
    solid: Solid,
    turn: np.ndarray,
    centre: tuple[float, float],
    size: float,
    look: Look,
    rng: np.random.Generator,
) -> Box | None:
    """Project, shade and draw one solid whose largest projected extent is `size` (ref px)."""
    canvas = film.canvas
    verts = solid.vertices @ turn.T
    extent = np.ptp(verts[:, :2], axis=0).max()
    verts = verts * (size / max(extent, 1e-6))
    flat = verts[:, :2] - verts[:, :2].mean(axis=0)
    pts = canvas.points(flat + np.asarray(centre))
    width = look.edge_width * canvas.u
    patch = Mask.around(canvas, pts, pad=width + 3)
    if patch is None:
        return None
    h, w = patch.data.shape
    transmit = np.ones((h, w, 3), np.float32)
    gx = (np.arange(w, dtype=np.float32) + patch.x0 + 0.5)[None, :]
    gy = (np.arange(h, dtype=np.float32) + patch.y0 + 0.5)[:, None]
    span = max(size * canvas.u, 1.0)
    body_centre = verts.mean(axis=0)
    hull = cv2.convexHull(np.round(pts * 16).astype(np.int32)).reshape(-1, 2) / 16.0
    inner_edges: list[np.ndarray] = []
    for face in solid.faces:
        corners = verts[list(face)]
        normal = np.cross(corners[1] - corners[0], corners[2] - corners[0])
        norm = np.linalg.norm(normal)
        if norm < 1e-9:
            continue
        normal /= norm
        if np.dot(normal, corners.mean(axis=0) - body_centre) < 0:
            normal = -normal
        if normal[2] <= 0.02:
            continue  # faces away from the camera
        shade = look.body * (1.0 - look.relief * (1.0 - normal[2] ** 2))
        shade *= 1.0 + 0.35 * look.relief * float(np.dot(normal, _LIGHT))
        hue = look.hue + rng.uniform(-0.8, 0.8)
        colour = shade * interference_tint(hue, look.tint * rng.uniform(0.6, 1.0))
        colour *= np.array([1.0, 1.0 - 0.3 * look.amber, 1.0 - 0.9 * look.amber])
        face_mask = Mask(patch.x0, patch.y0, np.zeros((h, w), np.uint8))
        face_pts = pts[list(face)]
        face_mask.polygon(face_pts)
        cover = face_mask.coverage()[..., None]
        a = rng.uniform(0, 2 * np.pi)
        mid = face_pts.mean(axis=0)
        ramp = 1.0 + look.ramp * ((gx - mid[0]) * np.cos(a) + (gy - mid[1]) * np.sin(a)) / span
        shaded = colour.astype(np.float32) * ramp[..., None]
        transmit += cover * (shaded - transmit)
        inner_edges.append(face_pts)
    if look.rim > 0:
        body = Mask(patch.x0, patch.y0, np.zeros((h, w), np.uint8))
        body.polygon(hull)
        band = Mask(patch.x0, patch.y0, np.zeros((h, w), np.uint8))
        band.polyline(hull, look.rim_width * canvas.u * 2, closed=True)
        soft = cv2.GaussianBlur(band.coverage(), (0, 0), max(look.rim_width * canvas.u / 2, 0.5))
        transmit *= 1.0 - np.float32(look.rim) * (soft * body.coverage())[..., None]
    if look.halo > 0:
        halo = Mask(patch.x0, patch.y0, np.zeros((h, w), np.uint8))
        halo.polyline(hull, width * 3.0, closed=True)
        transmit *= 1.0 + np.float32(look.halo) * halo.coverage()[..., None]
    edges = Mask(patch.x0, patch.y0, np.zeros((h, w), np.uint8))
    for face_pts in inner_edges:
        edges.polyline(face_pts, width * 0.6, closed=True)
    transmit *= 1.0 - np.float32(look.inner_edge) * edges.coverage()[..., None]
    outline = Mask(patch.x0, patch.y0, np.zeros((h, w), np.uint8))
    outline.polyline(hull, width, closed=True)
    transmit *= 1.0 - np.float32(look.edge) * outline.coverage()[..., None]
    if canvas.u * 0.6 >= 0.3:  # crystal edges are sharp but not razor sharp
        transmit = cv2.GaussianBlur(transmit, (0, 0), 0.6 * canvas.u)
    film.multiply(*patch.slices, transmit)
    return film.box(pts, pad=width)


# Sizes (largest projected extent, reference pixels) and counts per crystal class.
CRYSTAL_SIZES: dict[str, tuple[float, float, int, int]] = {
    "large crystals": (150.0, 380.0, 1, 4),
    "medium crystals": (60.0, 150.0, 2, 9),
    "small crystals": (18.0, 60.0, 4, 30),
}


def draw_crystals(
    film: Film, region: Region, rng: np.random.Generator, label: str, count: int | None = None
) -> list[Box]:
    """Faceted crystals of the class's size range, scattered or in a cluster."""
    low, high, fewest, most = CRYSTAL_SIZES[label]
    n = count if count is not None else int(rng.integers(fewest, most + 1))
    clustered = n > 2 and rng.random() < 0.4
    hub = region.sample(rng, margin=high)
    habit_pool = rng.choice(HABITS, size=int(rng.integers(1, 3)))
    boxes: list[Box] = []
    for _ in range(n):
        size = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        size = min(size, 1.2 * region.radius)
        if clustered:
            spread = rng.normal(0, high * 0.6, 2)
            centre = (hub[0] + spread[0], hub[1] + spread[1])
            if np.hypot(centre[0] - region.cx, centre[1] - region.cy) > region.radius - size / 2:
                centre = region.sample(rng, margin=size / 2)
        else:
            centre = region.sample(rng, margin=size / 2)
        habit = str(rng.choice(habit_pool))
        solid = habit_solid(rng, habit)
        look = sample_look(rng, faint=habit == "tablet" and rng.random() < 0.5)
        box = draw_solid(film, solid, rotation(rng, 1.2), centre, size, look, rng)
        if box is not None:
            boxes.append(box)
    return boxes


def draw_needles_and_plates(
    film: Film, region: Region, rng: np.random.Generator, kind: str, count: int | None = None
) -> list[Box]:
    """Needles (single, bundles or sea urchins) and/or thin plates (single or stacked).

    With `count`, exactly that many crystals: for "needles and plates" half of them
    (rounded down, at least one) are plates.
    """
    needles = plates = 0
    if count is not None:
        plates = count if kind == "plates" else max(count // 2, 1) if kind != "needles" else 0
        needles = count - plates
        if kind == "needles and plates" and needles < 1:
            raise ValueError("needles and plates takes crystals=2 or more")
    boxes: list[Box] = []
    if kind in ("needles", "needles and plates"):
        groups = 1 if count is not None else int(rng.integers(1, 4))
        for g in range(groups):
            n = needles if count is not None else int(rng.integers(1, 16))
            boxes += _needle_group(film, region, rng, n, urchin=g % 2 == 0 and n > 3)
    if kind in ("plates", "needles and plates"):
        n = plates if count is not None else int(rng.integers(1, 7))
        boxes += _plates(film, region, rng, n)
    return boxes


def _needle_group(
    film: Film, region: Region, rng: np.random.Generator, n: int, urchin: bool
) -> list[Box]:
    longest = min(420.0, 1.6 * region.radius)
    length_max = rng.uniform(min(90.0, longest), longest)
    hub = region.sample(rng, margin=length_max * 0.5)
    direction = rng.uniform(0, np.pi)
    look = sample_look(rng, faint=rng.random() < 0.6)
    boxes: list[Box] = []
    for _ in range(n):
        length = length_max * rng.uniform(0.35, 1.0)
        aspect = rng.uniform(12, 50)
        cap = rng.uniform(1.0, 3.0) / aspect if rng.random() < 0.5 else 0.0
        solid = prism(int(rng.choice([4, 6])), 1.0, cap=cap)
        thin = Solid(solid.vertices * np.array([1.0 / aspect, 1.0 / aspect, 1.0]), solid.faces)
        if urchin:
            angle = rng.uniform(0, 2 * np.pi)
            offset = length * 0.5
        else:
            angle = direction + rng.normal(0, 0.15)
            offset = rng.normal(0, length * 0.15)
        # Lay the needle's long axis (z) in the image plane along `angle`, slightly tipped.
        lay = np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], dtype=float)  # z -> x
        spin = np.array(
            [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
        )
        tip = rotation(rng, 0.25)
        turn = spin @ tip @ lay if not urchin else spin @ lay
        cx = hub[0] + np.cos(angle) * offset + rng.normal(0, 4)
        cy = hub[1] + np.sin(angle) * offset + rng.normal(0, 4)
        if np.hypot(cx - region.cx, cy - region.cy) > region.radius - length / 2:
            cx, cy = region.sample(rng, margin=length / 2)  # would stick out of the drop
        needle_look = replace(look, hue=look.hue + rng.uniform(-1, 1))
        box = draw_solid(film, thin, turn, (cx, cy), length, needle_look, rng)
        if box is not None:
            boxes.append(box)
    return boxes


def _plates(film: Film, region: Region, rng: np.random.Generator, n: int) -> list[Box]:
    boxes: list[Box] = []
    stacked = n > 1 and rng.random() < 0.5
    hub = region.sample(rng, margin=150)
    for _ in range(n):
        size = min(rng.uniform(50, 260), 1.2 * region.radius)
        solid = habit_solid(rng, "tablet")
        if stacked:
            centre = (hub[0] + rng.normal(0, size * 0.25), hub[1] + rng.normal(0, size * 0.25))
            if np.hypot(centre[0] - region.cx, centre[1] - region.cy) > region.radius - size / 2:
                centre = region.sample(rng, margin=size / 2)
        else:
            centre = region.sample(rng, margin=size / 2)
        look = sample_look(rng, faint=rng.random() < 0.6)
        box = draw_solid(film, solid, rotation(rng, 0.35), centre, size, look, rng)
        if box is not None:
            boxes.append(box)
    return boxes


def draw_microcrystals(
    film: Film, region: Region, rng: np.random.Generator, count: int | None = None
) -> list[Box]:
    """A shower of tiny sharp crystals in a few clusters; one box per cluster."""
    canvas = film.canvas
    clusters = count if count is not None else int(rng.integers(1, 6))
    dark, bright = Mask.full(canvas), Mask.full(canvas)
    boxes: list[Box] = []
    for _ in range(clusters):
        n = int(rng.integers(40, 350))
        spread = rng.uniform(25, 160)
        hub = np.asarray(region.sample(rng, margin=spread * 1.5))
        pts = hub + rng.normal(0, spread, (n, 2))
        inside = np.hypot(pts[:, 0] - region.cx, pts[:, 1] - region.cy) < region.radius - 6
        pts = pts[inside] if inside.any() else hub[None, :]
        sizes = np.exp(rng.uniform(np.log(2.5), np.log(11), len(pts)))
        drawn = []
        for (x, y), size in zip(pts, sizes, strict=True):
            sides = int(rng.integers(3, 7))
            angles = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(sides) / sides
            radii = size * rng.uniform(0.6, 1.0, sides)
            xy = np.stack([x + radii * np.cos(angles), y + radii * np.sin(angles)], axis=1)
            poly = canvas.points(xy)
            shine, shade = rng.uniform(0.3, 1.0), rng.uniform(0.5, 1.0)
            if size * canvas.u >= 1.5:
                bright.polygon(poly, shine)
                dark.polyline(poly, max(1.3 * canvas.u, 0.5), shade, closed=True)
            else:  # below a pixel or two a crystal is a faint dark sparkle
                dark.speck(poly, 0.6 * shade)
            drawn.append(poly)
        boxes.append(film.box(np.concatenate(drawn), pad=1.0))
    film.absorb(bright, (1.18, 1.2, 1.22))
    film.absorb(dark, (0.3, 0.3, 0.36))
    return boxes
