"""Crystals: convex polyhedra seen from above, needles, plates and microcrystal showers.

In transmitted light a protein crystal is mostly clear: its body passes about as much
light as the drop around it (the drop's texture shows through), so it shows by its
edges and by faces of different brightness (a face tilted towards the light is bright,
the face next to it darker), not as a dark blob. A crystal is a convex solid (block,
prism, bipyramid, capped prism, rhomb, tablet) turned at random and projected; its
outline is a thin sharp line with a dark refraction band inside and, along some edges,
a thin bright Becke line outside; internal facet edges are thin dark lines or bright
ridges; many have a small dark inclusion near the centre. Needles are lines 1-3
reference pixels wide, alone, in bundles, sprays or sea urchins. Every function
returns the bounding boxes (render pixels) of what it drew.
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

    body: float  # transmittance of a face square to the axis (about 1: crystals are clear)
    relief: float  # how much steep faces darken
    facet: float  # brightness difference between faces turned towards and away from the light
    light: float  # direction (image plane, radians) the light seems to come from
    hue: float
    tint: float  # birefringence saturation
    amber: float  # protein/dye colour
    edge: float  # darkness of the thin outline
    inner_edge: float  # contrast of internal facet edges (dark lines or bright ridges)
    edge_width: float  # reference pixels
    halo: float  # brightness of the Becke line just outside some outline edges
    halo_share: float  # share of outline edges that show a Becke line
    rim: float  # darkening of a band just inside the outline (refraction at the edges)
    rim_width: float  # reference pixels
    ramp: float  # brightness gradient across each face
    eye: float  # darkness of a small inclusion near the centre (0: none)


def sample_look(rng: np.random.Generator, faint: bool = False, small: bool = False) -> Look:
    """A random look; `faint` for thin plates and needles, `small` for bright-centred specks."""
    u = rng.uniform
    tint = u(0.0, 0.04) if rng.random() < 0.85 else u(0.04, 0.15)  # bright field: faint
    body = u(0.97, 1.04) if faint else u(0.92, 1.06)
    return Look(
        body=u(1.0, 1.12) if small else body,
        relief=u(0.1, 0.3) if faint else u(0.15, 0.45),
        facet=u(0.1, 0.3) if faint else u(0.3, 0.7),
        light=u(0, 2 * np.pi),
        hue=u(0, 2 * np.pi),
        tint=tint * (0.6 if faint else 1.0),
        amber=u(0.0, 0.25) if rng.random() < 0.3 else 0.0,
        edge=u(0.3, 0.55) if faint else u(0.4, 0.8),
        inner_edge=u(0.1, 0.25) if faint else u(0.15, 0.45),
        edge_width=u(0.9, 1.6) if faint else u(1.0, 2.2),
        halo=u(0.2, 0.6),
        halo_share=u(0.2, 1.0),
        rim=u(0.45, 0.75) if small else u(0.1, 0.3) if faint else u(0.2, 0.5),
        rim_width=u(2.0, 5.0) if small else u(2.0, 8.0),
        ramp=u(0.0, 0.2),
        eye=u(0.3, 0.7) if rng.random() < 0.35 and not faint else 0.0,
    )


def posed(solid: Solid, turn: np.ndarray, size: float) -> np.ndarray:
    """The solid's vertices turned and scaled so the projected extent is `size`, centred."""
    verts = solid.vertices @ turn.T
    extent = np.ptp(verts[:, :2], axis=0).max()
    verts = verts * (size / max(extent, 1e-6))
    return verts - np.append(verts[:, :2].mean(axis=0), 0.0)


def _front_faces(solid: Solid, verts: np.ndarray) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """The faces turned towards the camera, each with its outward unit normal."""
    first = np.array([face[:3] for face in solid.faces])
    normals = np.cross(
        verts[first[:, 1]] - verts[first[:, 0]], verts[first[:, 2]] - verts[first[:, 0]]
    )
    norms = np.linalg.norm(normals, axis=1)
    mids = np.array([verts[list(face)].mean(axis=0) for face in solid.faces])
    outward = np.einsum("ij,ij->i", normals, mids - verts.mean(axis=0)) >= 0
    normals = normals / np.maximum(norms, 1e-9)[:, None] * np.where(outward, 1.0, -1.0)[:, None]
    keep = (norms >= 1e-9) & (normals[:, 2] > 0.02)
    return [(face, normals[k]) for k, face in enumerate(solid.faces) if keep[k]]


def _face_shade(normal: np.ndarray, look: Look) -> float:
    """Brightness of a face: steep faces darken; faces turned to the light brighten."""
    steep = 1.0 - normal[2] ** 2
    towards = normal[0] * np.cos(look.light) + normal[1] * np.sin(look.light)
    shade = look.body * (1.0 - look.relief * steep) * (1.0 + look.facet * towards)
    return float(max(shade, 0.08))


_AA_SPREAD = 1.4  # render pixels an anti-aliased OpenCV line or fill covers beyond its width


def _blank(patch: Mask) -> Mask:
    return Mask(patch.x0, patch.y0, np.zeros_like(patch.data))


def stroke(mask: Mask, seg: np.ndarray, width: float, value: float = 1.0) -> None:
    """A straight line about `width` render pixels wide, however thin.

    OpenCV's anti-aliased fills come out about 1.4 pixels wider than asked (and its thick
    lines wider still), so the quad is drawn that much narrower; below that width the
    stroke is a one-pixel line that fades with its width."""
    if width < _AA_SPREAD:
        mask.polyline(seg, 1.0, value * width / _AA_SPREAD)
        return
    along = seg[1] - seg[0]
    half = max(width - _AA_SPREAD, 0.05) / 2
    side = np.array([-along[1], along[0]]) / (np.linalg.norm(along) + 1e-9) * half
    mask.polygon(np.stack([seg[0] + side, seg[1] + side, seg[1] - side, seg[0] - side]), value)


def _strokes(mask: Mask, points: np.ndarray, width: float, closed: bool = True) -> None:
    """Each side of a polygon (or a polyline) as a straight stroke."""
    if width < _AA_SPREAD:  # one faded one-pixel line does them all
        mask.polyline(points, 1.0, width / _AA_SPREAD, closed=closed)
        return
    ends = np.roll(points, -1, axis=0) if closed else points[1:]
    for a, b in zip(points, ends, strict=False):
        stroke(mask, np.stack([a, b]), width)


def _shade_faces(
    patch: Mask,
    pts: np.ndarray,
    faces: list[tuple[tuple[int, ...], np.ndarray]],
    look: Look,
    rng: np.random.Generator,
    span: float,
) -> np.ndarray:
    """(h, w, 3) transmittance of the faces: each its own shade, tint and gentle ramp."""
    h, w = patch.data.shape
    transmit = np.ones((h, w, 3), np.float32)
    gx = (np.arange(w, dtype=np.float32) + patch.x0 + 0.5)[None, :]
    gy = (np.arange(h, dtype=np.float32) + patch.y0 + 0.5)[:, None]
    amber = np.array([1.0, 1.0 - 0.3 * look.amber, 1.0 - 0.9 * look.amber])
    for face, normal in faces:
        hue = look.hue + rng.uniform(-0.8, 0.8)
        colour = _face_shade(normal, look) * interference_tint(hue, look.tint * rng.uniform(0.6, 1))
        face_pts = pts[list(face)]
        mask = _blank(patch)
        mask.polygon(face_pts)
        a = rng.uniform(0, 2 * np.pi)
        mid = face_pts.mean(axis=0)
        ramp = 1.0 + look.ramp * ((gx - mid[0]) * np.cos(a) + (gy - mid[1]) * np.sin(a)) / span
        shaded = (colour * amber).astype(np.float32) * ramp[..., None]
        transmit += mask.coverage()[..., None] * (shaded - transmit)
    return transmit


def _hull(pts: np.ndarray) -> np.ndarray:
    return cv2.convexHull(np.round(pts * 16).astype(np.int32)).reshape(-1, 2) / 16.0


def _rim(patch: Mask, hull: np.ndarray, look: Look, u: float) -> np.ndarray:
    """(h, w) factor: a dark refraction band just inside the outline."""
    body, band = _blank(patch), _blank(patch)
    body.polygon(hull)
    band.polyline(hull, look.rim_width * u * 2, closed=True)
    soft = cv2.GaussianBlur(band.coverage(), (0, 0), max(look.rim_width * u / 2, 0.5))
    return 1.0 - np.float32(look.rim) * soft * body.coverage()


def _becke(
    patch: Mask, hull: np.ndarray, look: Look, rng: np.random.Generator, u: float
) -> np.ndarray:
    """(h, w) factor: thin bright lines just outside some of the outline's edges."""
    lines = _blank(patch)
    centre = hull.mean(axis=0)
    offset = (look.edge_width * 0.5 + 1.0) * u
    for a, b in zip(hull, np.roll(hull, -1, axis=0), strict=True):
        if rng.random() >= look.halo_share:
            continue
        along = b - a
        normal = np.array([-along[1], along[0]]) / (np.linalg.norm(along) + 1e-9)
        if np.dot(normal, (a + b) / 2 - centre) < 0:
            normal = -normal
        stroke(lines, np.stack([a, b]) + normal * offset, 1.5 * u)
    return 1.0 + np.float32(look.halo) * lines.coverage()


def _inner_edges(faces: list[tuple[tuple[int, ...], np.ndarray]]) -> list[tuple[int, int]]:
    """Edges shared by two visible faces: the facet edges seen inside the outline."""
    seen: dict[tuple[int, int], int] = {}
    for face, _ in faces:
        for a, b in zip(face, face[1:] + face[:1], strict=True):
            key = (min(a, b), max(a, b))
            seen[key] = seen.get(key, 0) + 1
    return [edge for edge, n in seen.items() if n > 1]


def _edges(
    patch: Mask,
    pts: np.ndarray,
    inner: list[tuple[int, int]],
    hull: np.ndarray,
    look: Look,
    rng: np.random.Generator,
    u: float,
) -> np.ndarray:
    """(h, w) factor: internal edges (dark lines or bright ridges) and the thin outline."""
    dark, bright, outline = _blank(patch), _blank(patch), _blank(patch)
    width = look.edge_width * u
    for a, b in inner:
        stroke(bright if rng.random() < 0.4 else dark, pts[[a, b]], width * 0.7)
    _strokes(outline, hull, width)
    factor = 1.0 - np.float32(look.inner_edge) * dark.coverage()
    factor *= 1.0 + np.float32(0.7 * look.inner_edge) * bright.coverage()
    return factor * (1.0 - np.float32(look.edge) * outline.coverage())


def _eye(
    patch: Mask, verts: np.ndarray, pts: np.ndarray, look: Look, rng: np.random.Generator, u: float
) -> np.ndarray:
    """(h, w) factor: a small dark oval (inclusion, or the apex seen through the body)
    with a darker rim, near the top apex."""
    centre = pts.mean(axis=0)
    spot = centre + rng.uniform(0.3, 0.8) * (pts[int(np.argmax(verts[:, 2]))] - centre)
    extent = float(np.ptp(pts, axis=0).max())
    a = extent * rng.uniform(0.03, 0.075)
    b, turn = a * rng.uniform(0.45, 0.8), rng.uniform(0, np.pi)
    if b < 0.8:  # below a pixel or two: nothing to see
        return np.ones(patch.data.shape, np.float32)
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    ring = np.stack([a * np.cos(t), b * np.sin(t)], axis=1)
    ring = spot + ring @ np.array([[np.cos(turn), np.sin(turn)], [-np.sin(turn), np.cos(turn)]])
    rim, fill = _blank(patch), _blank(patch)
    _strokes(rim, ring, max(0.35 * b, 1.0 * u))
    fill.polygon(ring, rng.uniform(0.2, 0.6))
    shade = np.maximum(rim.coverage(), fill.coverage())
    return 1.0 - np.float32(look.eye) * shade


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
    verts = posed(solid, turn, size)
    pts = canvas.points(verts[:, :2] + np.asarray(centre))
    width = look.edge_width * canvas.u
    patch = Mask.around(canvas, pts, pad=width + 3 * canvas.u + 3)
    if patch is None:
        return None
    faces = _front_faces(solid, verts)
    hull = _hull(pts)
    transmit = _shade_faces(patch, pts, faces, look, rng, max(size * canvas.u, 1.0))
    factor = _rim(patch, hull, look, canvas.u) * _becke(patch, hull, look, rng, canvas.u)
    factor *= _edges(patch, pts, _inner_edges(faces), hull, look, rng, canvas.u)
    if look.eye > 0:
        factor *= _eye(patch, verts, pts, look, rng, canvas.u)
    transmit *= factor[..., None]
    if canvas.u * 0.5 >= 0.3:  # crystal edges are sharp but not razor sharp
        transmit = cv2.GaussianBlur(transmit, (0, 0), 0.5 * canvas.u)
    film.multiply(*patch.slices, transmit)
    return film.box(pts, pad=width)


# How far out (times Region.drop_radius, which sits just inside the drop edge) a
# crystal's bounding box may reach: into the meniscus, not past the drop.
EDGE_REACH = 1.03
# Sizes (largest projected extent, reference pixels) and counts per crystal class.
CRYSTAL_SIZES: dict[str, tuple[float, float, int, int]] = {
    "large crystals": (150.0, 380.0, 1, 4),
    "medium crystals": (60.0, 150.0, 2, 9),
    "small crystals": (18.0, 60.0, 4, 30),
}
# Share of drops whose crystals sit partly at the drop edge, and of their crystals that do.
EDGE_DROPS, EDGE_SHARE = 0.3, 0.4


def nudge_inside(
    centre: tuple[float, float], flat: np.ndarray, region: Region, pad: float = 3.0
) -> tuple[float, float]:
    """Move a shape (points `flat` relative to `centre`, ref px) towards the drop centre
    until its bounding box lies within the drop (EDGE_REACH times `region.drop_radius`)."""
    lo, hi = flat.min(axis=0) - pad, flat.max(axis=0) + pad
    c = np.asarray(centre, dtype=float)
    middle = np.array([region.cx, region.cy])
    for _ in range(8):
        corners = np.array([[x, y] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])]) + c
        excess = np.hypot(*(corners - middle).T).max() - EDGE_REACH * region.drop_radius
        if excess <= 0:
            break
        away = c - middle
        reach = np.hypot(*away)
        if reach < 1e-6:
            break
        c -= away / reach * min(excess + 1.0, reach)
    return (float(c[0]), float(c[1]))


def _at_edge(region: Region, rng: np.random.Generator, size: float) -> tuple[float, float]:
    """A centre near the drop edge (the crystal reaches into the meniscus)."""
    angle = rng.uniform(0, 2 * np.pi)
    dist = max(region.drop_radius - 0.3 * size, 0.0)
    return (region.cx + dist * np.cos(angle), region.cy + dist * np.sin(angle))


def _crystal_centre(
    region: Region,
    rng: np.random.Generator,
    size: float,
    hub: tuple[float, float] | None,
    spread: float,
) -> tuple[float, float]:
    """Scattered over the drop, or near `hub` for a cluster."""
    if hub is None:
        return region.sample(rng, margin=size / 2)
    offset = rng.normal(0, spread, 2)
    centre = (hub[0] + offset[0], hub[1] + offset[1])
    if np.hypot(centre[0] - region.cx, centre[1] - region.cy) > region.radius - size / 2:
        return region.sample(rng, margin=size / 2)
    return centre


def draw_crystals(
    film: Film, region: Region, rng: np.random.Generator, label: str, count: int | None = None
) -> list[Box]:
    """Faceted crystals of the class's size range: scattered, in a cluster, some at the edge."""
    low, high, fewest, most = CRYSTAL_SIZES[label]
    n = count if count is not None else int(rng.integers(fewest, most + 1))
    clustered = n > 2 and rng.random() < 0.4
    hub = region.sample(rng, margin=high) if clustered else None
    habit_pool = rng.choice(HABITS, size=int(rng.integers(1, 3)))
    light = rng.uniform(0, 2 * np.pi)  # one lamp for the whole drop
    edge_share = EDGE_SHARE if rng.random() < EDGE_DROPS else 0.0
    boxes: list[Box] = []
    for _ in range(n):
        size = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        size = min(size, 1.2 * region.radius)
        if rng.random() < edge_share:
            centre = _at_edge(region, rng, size)
        else:
            centre = _crystal_centre(region, rng, size, hub, high * 0.6)
        habit = str(rng.choice(habit_pool))
        solid, turn = habit_solid(rng, habit), rotation(rng, 1.2)
        look = sample_look(rng, faint=habit == "tablet" and rng.random() < 0.5, small=size < 45)
        look = replace(look, light=light + rng.normal(0, 0.25))
        centre = nudge_inside(centre, posed(solid, turn, size)[:, :2], region)
        box = draw_solid(film, solid, turn, centre, size, look, rng)
        if box is not None:
            boxes.append(box)
    return boxes


# Needle groups and how many needles each holds (low, high + 1) when not counted.
NEEDLE_FORMS = ("bundle", "spray", "urchin", "scattered")
NEEDLE_COUNTS = {"bundle": (5, 40), "spray": (5, 30), "urchin": (10, 60), "scattered": (1, 8)}


def draw_needles_and_plates(
    film: Film, region: Region, rng: np.random.Generator, kind: str, count: int | None = None
) -> list[Box]:
    """Needles (single, bundles, sprays or sea urchins) and/or thin plates (single or stacked).

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
        for _ in range(groups):
            form = str(rng.choice(NEEDLE_FORMS))
            n = needles if count is not None else int(rng.integers(*NEEDLE_COUNTS[form]))
            boxes += needle_group(film, region, rng, n, form)
    if kind in ("plates", "needles and plates"):
        n = plates if count is not None else int(rng.integers(1, 7))
        boxes += _plates(film, region, rng, n)
    return boxes


def _direction(angles: np.ndarray | float) -> np.ndarray:
    return np.stack([np.cos(angles), np.sin(angles)], axis=-1)


def needle_segments(region: Region, rng: np.random.Generator, n: int, form: str) -> np.ndarray:
    """(n, 2, 2) start and end points (reference pixels) of a group of needles."""
    u = rng.uniform
    longest = min(420.0, 1.6 * region.radius)
    top = u(min(60.0, longest), longest)
    if form == "urchin":
        top *= u(0.3, 0.55)  # rays from a core: the radius, not the length, is `top`
    hub = np.asarray(region.sample(rng, margin=0.3 * top))
    axis = u(0, 2 * np.pi)
    lengths = top * u(0.35, 1.0, n)[:, None]
    if form == "bundle":  # a sheaf: near-parallel needles side by side, ends fanning a little
        angles = axis + rng.normal(0, u(0.01, 0.06), n)
        mids = hub + np.outer(rng.normal(0, 0.12 * top, n), _direction(axis))
        mids += np.outer(rng.normal(0, u(1.5, 10.0), n), _direction(axis + np.pi / 2))
        half = 0.5 * lengths * _direction(angles)
        starts, ends = mids - half, mids + half
    elif form in ("spray", "urchin"):  # rays from a common point: a fan or a full ball
        fan = np.pi if form == "urchin" else u(0.15, 0.7)
        angles = axis + u(-fan, fan, n)
        inner = u(0.0, 0.12, n)[:, None] * top
        starts = hub + inner * _direction(angles) + rng.normal(0, 2.0, (n, 2))
        ends = hub + (inner + lengths) * _direction(angles)
    elif form == "scattered":
        mids = region.sample_many(rng, n)
        half = 0.5 * lengths * _direction(u(0, 2 * np.pi, n))
        starts, ends = mids - half, mids + half
    else:
        raise ValueError(f"unknown needle form {form!r} (known: {', '.join(NEEDLE_FORMS)})")
    return np.stack([starts, ends], axis=1)


def _clip_to_circle(seg: np.ndarray, centre: np.ndarray, radius: float) -> tuple[np.ndarray, bool]:
    """The part of a segment inside a circle; False when none (or a sliver) is."""
    start, along = seg[0], seg[1] - seg[0]
    a = float(along @ along)
    if a < 1e-9:
        return seg, bool(np.hypot(*(start - centre)) <= radius)
    rel = start - centre
    b, c = 2.0 * float(along @ rel), float(rel @ rel) - radius * radius
    disc = b * b - 4 * a * c
    if disc <= 0:
        return seg, False
    root = np.sqrt(disc)
    t0, t1 = max((-b - root) / (2 * a), 0.0), min((-b + root) / (2 * a), 1.0)
    if (t1 - t0) * np.sqrt(a) < 2.0:
        return seg, False
    return np.stack([start + t0 * along, start + t1 * along]), True


def _fit_needle(seg: np.ndarray, region: Region, hub: np.ndarray) -> np.ndarray:
    """The needle cut back to the drop; a short one at `hub` when nothing is left of it.
    Its bounding box then lies inside the drop too (shortened about its inner end)."""
    reach = region.radius + 0.5 * max(region.drop_radius - region.radius, 0.0)
    centre = np.array([region.cx, region.cy])
    seg, inside = _clip_to_circle(seg, centre, reach)
    if not inside:
        along = seg[1] - seg[0]
        step = along / (np.linalg.norm(along) + 1e-9) * min(np.linalg.norm(along), 8.0)
        seg = np.stack([hub, hub + step])
    inner = int(np.argmin(np.hypot(*(seg - centre).T)))
    for _ in range(10):
        corners = np.array([[x, y] for x in seg[:, 0] for y in seg[:, 1]])
        if np.hypot(*(corners - centre).T).max() <= region.drop_radius - 3.0:
            break
        seg = seg[inner] + (seg - seg[inner]) * 0.8
    return seg


def _needle_strokes(
    patch: Mask, seg: np.ndarray, width: float, side: float, u: float
) -> tuple[Mask, Mask]:
    """Coverage of one needle's dark core and of the thin bright Becke line beside it."""
    core, becke = _blank(patch), _blank(patch)
    stroke(core, seg, width * u)
    along = seg[1] - seg[0]
    normal = np.array([-along[1], along[0]]) / (np.linalg.norm(along) + 1e-9)
    stroke(becke, seg + normal * side * (0.5 * width + 1.0) * u, 1.0 * u)
    return core, becke


def needle_group(
    film: Film, region: Region, rng: np.random.Generator, n: int, form: str
) -> list[Box]:
    """A group of thin needles (lines 1-3 reference pixels wide), one box per needle.

    Overlapping needles add up, so a dense bundle reads as a dark streak even when the
    render is too small to show a single needle."""
    canvas = film.canvas
    segments = needle_segments(region, rng, n, form)
    hub = segments[:, 0].mean(axis=0)
    if np.hypot(hub[0] - region.cx, hub[1] - region.cy) > region.radius:
        hub = np.array([region.cx, region.cy])
    segments = np.stack([_fit_needle(seg, region, hub) for seg in segments])
    pts = canvas.points(segments.reshape(-1, 2)).reshape(-1, 2, 2)
    patch = Mask.around(canvas, pts.reshape(-1, 2), pad=4 * canvas.u + 2)
    if patch is None:
        return []
    base_width, darkness = rng.uniform(1.0, 2.6), rng.uniform(0.35, 0.8)
    halo = rng.uniform(0.0, 0.4)
    od = np.zeros(patch.data.shape, np.float32)
    boxes: list[Box] = []
    for seg in pts:
        width = float(np.clip(base_width * rng.uniform(0.7, 1.3), 1.0, 3.0))
        dark = darkness * rng.uniform(0.8, 1.1)
        core, becke = _needle_strokes(patch, seg, width, float(rng.choice([-1.0, 1.0])), canvas.u)
        od += core.coverage() * np.float32(-np.log1p(-min(dark, 0.95)))
        od -= becke.coverage() * np.float32(np.log1p(halo))
        boxes.append(film.box(seg, pad=0.5 * width * canvas.u))
    film.multiply(*patch.slices, np.minimum(np.exp(-od), 1.5))
    return boxes


def _plates(film: Film, region: Region, rng: np.random.Generator, n: int) -> list[Box]:
    """Thin tablets: faint faces, a crisp outline, many lying tilted (their sides show)."""
    boxes: list[Box] = []
    stacked = n > 1 and rng.random() < 0.5
    hub = region.sample(rng, margin=150)
    light = rng.uniform(0, 2 * np.pi)
    for _ in range(n):
        size = min(rng.uniform(50, 260), 1.2 * region.radius)
        solid = habit_solid(rng, "tablet")
        if stacked:
            centre = (hub[0] + rng.normal(0, size * 0.25), hub[1] + rng.normal(0, size * 0.25))
            if np.hypot(centre[0] - region.cx, centre[1] - region.cy) > region.radius - size / 2:
                centre = region.sample(rng, margin=size / 2)
        else:
            centre = region.sample(rng, margin=size / 2)
        turn = rotation(rng, 0.35 if rng.random() < 0.5 else 1.1)
        look = sample_look(rng, faint=rng.random() < 0.7)
        look = replace(look, light=light, edge=max(look.edge, rng.uniform(0.4, 0.7)))
        centre = nudge_inside(centre, posed(solid, turn, size)[:, :2], region)
        box = draw_solid(film, solid, turn, centre, size, look, rng)
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
