"""The well, the drop and the light: everything in a clear drop but its contents.

Modelled on a Formulatrix Rock Imager 1000 frame of a sitting-drop plate: pale plate
plastic in the corners, the dark well wall as a rounded square, the bright round
sub-well (the aperture) with a grey rim and a dark meniscus crescent at its bottom,
and inside it the drop, either filling the sub-well (as on the real plate) or as a
smaller drop with its own dark meniscus. The light is a smooth field with a colour
cast, soft patches and birefringent rainbow tints from the plastic; the camera adds
blur, exposure, sensor noise and JPEG compression (`camera.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from marco_svc.synth.canvas import Canvas, grain, smoothstep


@dataclass(frozen=True)
class Blob:
    """One drop outline in reference pixels: a wobbly, possibly stretched ellipse."""

    cx: float
    cy: float
    radius: float
    stretch: float = 1.0  # long axis / short axis
    angle: float = 0.0  # of the long axis, radians
    wobble: tuple[float, ...] = ()  # amplitudes of harmonics 2, 3, 4...
    phases: tuple[float, ...] = ()
    meniscus: float = 30.0  # width of the dark meniscus band, reference pixels
    darkness: float = 0.4  # how dark the meniscus band gets at the edge
    body: float = 1.0  # transmittance of the whole drop (a strong lens darkens it)

    def bounds(self) -> tuple[float, float, float, float]:
        reach = self.radius * self.stretch * (1 + sum(abs(a) for a in self.wobble)) + 4
        return (self.cx - reach, self.cy - reach, self.cx + reach, self.cy + reach)


@dataclass(frozen=True)
class Well:
    """The sub-well aperture and the wall around it (reference pixels)."""

    cx: float
    cy: float
    radius: float
    wall_a: float  # half-width of the wall's outer edge (a rounded square)
    wall_b: float  # half-height
    wall_n: float  # superellipse exponent: 2 = ellipse, larger = squarer
    wall_dx: float
    wall_dy: float
    wall_soft: float  # softness of the outer wall edge
    wall_grain: float  # strength of the olive speckle on the wall
    band_width: float  # grey rim just outside the aperture
    band_level: float
    line_level: float  # the thin light line in the rim, strongest in the lower half
    crescent: float  # thickness of the dark crescent at the bottom of the aperture
    crescent_angle: float  # where the crescent is thickest (pi/2 = bottom)
    limb: float  # darkening of the aperture towards its edge
    shade: float  # darkening of the aperture just above the crescent
    slot: float  # brightness of the moulded slot in the left wall (0 = none)
    plate_level: float
    blur: float  # focus blur of the well structure
    squareness: float = 2.0  # superellipse exponent of the aperture: 2 round, ~8 square


@dataclass(frozen=True)
class Light:
    """Illumination and colour of the aperture and the plate."""

    level: float
    cast: tuple[float, float, float]
    fall: float  # darkening towards the bottom of the aperture
    tilt: float
    tilt_angle: float
    patches: float
    streaks: tuple[tuple[float, float, float, float], ...]  # angle, offset, width, amplitude
    rainbow: float  # saturation of the birefringent tints inside the aperture
    rainbow_angle: float
    rainbow_period: float
    rainbow_focus: float  # direction in which the tints are strongest
    plate_rainbow: float
    exposure: float = 1.0  # linear gain (bad drops: dark, overexposed)


@dataclass(frozen=True)
class Camera:
    focus: float  # blur of the drop contents, reference pixels
    noise: float  # sensor noise spread at full size (0..1 scale)
    jpeg_quality: int
    defocus: float = 0.0  # blur of the whole frame (bad drops: out of focus)


@dataclass(frozen=True)
class Dry:
    """An empty sub-well: the bare curved plastic floor, no liquid lens, no meniscus."""

    hot: float  # brighter centre where the curved floor focuses the light
    edge: float  # darkening towards the rim
    ring_radius: float  # the floor's moulded step, as a fraction of the aperture radius
    ring_depth: float


@dataclass(frozen=True)
class Scene:
    well: Well
    drops: tuple[Blob, ...]
    fills_well: bool  # the drop fills the sub-well: its edge is the aperture edge
    light: Light
    camera: Camera
    dry: Dry | None = None  # set when there is no drop at all
    fields: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    look: str = "formulatrix"  # the imager look (looks.py) the scene was made for
    zoom: float = 1.0  # magnification relative to a Rock Imager frame
    vignette: float = 0.0  # darkening towards the frame corners
    grayscale: bool = False  # a monochrome camera

    def drop_circle(self) -> tuple[float, float, float]:
        """Centre and radius of the (largest) drop in reference pixels; radius 0 when none."""
        if self.fills_well:
            return (self.well.cx, self.well.cy, self.well.radius)
        if not self.drops:
            return (self.well.cx, self.well.cy, 0.0)
        big = max(self.drops, key=lambda b: b.radius * b.stretch)
        return (big.cx, big.cy, big.radius)

    def content_region(self) -> tuple[float, float, float]:
        """Circle (reference pixels) inside which contents are placed, away from the edges."""
        cx, cy, r = self.drop_circle()
        if self.fills_well:
            return (cx, cy - self.well.crescent * 0.5, 0.86 * r - self.well.crescent * 0.5)
        big = max(self.drops, key=lambda b: b.radius * b.stretch) if self.drops else None
        if big is None:
            return (cx, cy, 0.0)
        return _inside_aperture(cx, cy, 0.82 * r - 0.3 * big.meniscus, self.well)

    def with_(self, **changes: object) -> Scene:
        return replace(self, **changes)


def sample_scene(rng: np.random.Generator) -> Scene:
    """A random clear-drop scene; draws do not depend on the render size."""
    u = rng.uniform
    radius = u(425, 462)
    well = Well(
        cx=u(-10, 35),
        cy=u(-10, 35),
        radius=radius,
        wall_a=radius + u(125, 175),
        wall_b=radius + u(125, 190),
        wall_n=u(2.4, 3.2),
        wall_dx=u(-20, 20),
        wall_dy=u(-10, 25),
        wall_soft=u(8, 30),
        wall_grain=u(0.5, 1.2),
        band_width=u(10, 26),
        band_level=u(0.2, 0.42),
        line_level=u(0.05, 0.35),
        crescent=u(0, 34) if rng.random() < 0.85 else 0.0,
        crescent_angle=np.pi / 2 + u(-0.3, 0.3),
        limb=u(0.03, 0.15),
        shade=u(0.1, 0.4),
        slot=u(0.1, 0.45) if rng.random() < 0.6 else 0.0,
        plate_level=u(0.6, 0.86),
        blur=u(1.5, 4.5) if rng.random() < 0.8 else u(4.5, 12.0),
    )
    fills = rng.random() < 0.55
    drops: tuple[Blob, ...] = () if fills else (_sample_blob(rng, well),)
    if fills:
        _ = _sample_blob(rng, well)  # keep the stream aligned with the other branch
    # The real plate's cast: R/G 0.92..0.98, B/G 1.03..1.15, bluer when less red.
    blue, n_r, n_b = rng.standard_normal(3)
    cast_r = float(np.clip(0.945 - 0.022 * blue + 0.012 * n_r, 0.86, 1.0))
    cast_b = float(np.clip(1.085 + 0.04 * blue + 0.018 * n_b, 1.0, 1.2))
    if rng.random() < 0.08:  # a more neutral lamp
        cast_r, cast_b = u(0.97, 1.02), u(0.96, 1.02)
    light = Light(
        level=u(0.68, 0.84),
        cast=(cast_r, 1.0, cast_b),
        fall=u(0.0, 0.25),
        tilt=u(0.0, 0.08),
        tilt_angle=u(0, 2 * np.pi),
        patches=u(0.02, 0.07),
        streaks=tuple(
            (u(0, np.pi), u(-250, 250), u(15, 90), u(-0.1, 0.1))
            for _ in range(int(rng.integers(0, 4)))
        ),
        rainbow=u(0.0, 0.035) if rng.random() < 0.8 else u(0.035, 0.09),
        rainbow_angle=u(0, 2 * np.pi),
        rainbow_period=u(500, 1500),
        rainbow_focus=u(0, 2 * np.pi),
        plate_rainbow=u(0.0, 0.06),
        exposure=u(0.94, 1.06),
    )
    camera = Camera(
        focus=u(0.0, 1.2),
        noise=u(0.015, 0.024),
        jpeg_quality=int(rng.integers(72, 90)),
    )
    fields = {
        "patches": rng.standard_normal((5, 6)).astype(np.float32),
        "hue": rng.standard_normal((4, 5)).astype(np.float32),
        "wall": rng.standard_normal((6, 7)).astype(np.float32),
        "plate": rng.standard_normal((4, 5)).astype(np.float32),
    }
    return Scene(well, drops, fills, light, camera, fields=fields)


def _sample_blob(rng: np.random.Generator, well: Well) -> Blob:
    u = rng.uniform
    radius = well.radius * u(0.42, 0.9)
    room = max(well.radius - radius * 1.05 - 10, 0)
    angle, dist = u(0, 2 * np.pi), room * np.sqrt(u(0, 1))
    return Blob(
        cx=well.cx + dist * np.cos(angle),
        cy=well.cy + dist * np.sin(angle),
        radius=radius,
        stretch=u(1.0, 1.08),
        angle=u(0, np.pi),
        wobble=tuple(u(0, 0.025) for _ in range(3)),
        phases=tuple(u(0, 2 * np.pi) for _ in range(3)),
        meniscus=radius * u(0.03, 0.12),
        darkness=u(0.25, 0.7),
    )


def _inside_aperture(cx: float, cy: float, radius: float, well: Well) -> tuple[float, float, float]:
    """The largest circle inside both the content circle and the aperture's inner circle."""
    aperture = 0.95 * well.radius
    along = np.array([cx - well.cx, cy - well.cy])
    dist = float(np.hypot(*along))
    if dist + radius <= aperture:
        return (cx, cy, radius)
    unit = along / max(dist, 1e-6)
    middle = (dist - radius + aperture) / 2
    return (
        float(well.cx + unit[0] * middle),
        float(well.cy + unit[1] * middle),
        max((radius + aperture - dist) / 2, 0.0),
    )


def aperture_norm(dx: np.ndarray, dy: np.ndarray, squareness: float) -> np.ndarray:
    """Distance-like radius of a superellipse: the circle's for 2, a rounded square's above."""
    if squareness == 2.0:
        return np.sqrt(dx * dx + dy * dy)
    n = np.float32(squareness)
    return (np.abs(dx) ** n + np.abs(dy) ** n) ** (1 / n)


def _field(canvas: Canvas, coarse: np.ndarray) -> np.ndarray:
    return cv2.resize(coarse, (canvas.width, canvas.height), interpolation=cv2.INTER_CUBIC)


def _tint(hue: np.ndarray, saturation: np.ndarray | float) -> np.ndarray:
    """Multiplicative RGB tint from a hue angle field: 1 + s * (cos h, cos h-120, cos h+120)."""
    out = np.empty((*hue.shape, 3), np.float32)
    for channel, shift in enumerate((0.0, -2.0944, 2.0944)):
        out[..., channel] = 1.0 + saturation * np.cos(hue + shift)
    return out


def aperture_light(canvas: Canvas, scene: Scene) -> np.ndarray:
    """Colour of the lit sub-well floor (before the wall and the drop are put in)."""
    light, well = scene.light, scene.well
    xs, ys = canvas.grid
    dx, dy = xs - well.cx, ys - well.cy
    brightness = np.full(canvas.shape, light.level, np.float32)
    brightness *= 1.0 - light.fall * np.clip(dy / well.radius, 0.0, 1.0) ** 2
    brightness *= (
        1.0
        + light.tilt * (np.cos(light.tilt_angle) * dx + np.sin(light.tilt_angle) * dy) / well.radius
    )
    brightness *= 1.0 + light.patches * _field(canvas, scene.fields["patches"])
    for angle, offset, width, amplitude in light.streaks:
        along = np.cos(angle) * dx + np.sin(angle) * dy - offset
        brightness *= 1.0 + amplitude * (smoothstep(-width, width, along) - 0.5)
    r = np.sqrt(dx * dx + dy * dy) + 1e-3
    towards = (np.cos(light.rainbow_focus) * dx + np.sin(light.rainbow_focus) * dy) / r
    weight = np.clip(r / well.radius, 0.0, 1.0) ** 3 * (0.5 + 0.5 * towards)
    hue = (np.cos(light.rainbow_angle) * dx + np.sin(light.rainbow_angle) * dy) * (
        2 * np.pi / light.rainbow_period
    ) + 0.8 * _field(canvas, scene.fields["hue"])
    colour = _tint(hue, light.rainbow * (0.1 + 0.9 * weight))
    colour *= np.asarray(light.cast, np.float32)
    return colour * brightness[..., None]


def plate_light(canvas: Canvas, scene: Scene) -> np.ndarray:
    """Colour of the plate plastic around the well: pale blue-grey with rainbow shimmer."""
    xs, ys = canvas.grid
    hue = 1.2 * _field(canvas, scene.fields["plate"]) + (xs + ys) / 220.0
    colour = np.asarray((0.93, 0.99, 1.06), np.float32) * np.float32(scene.well.plate_level)
    return _tint(hue, scene.light.plate_rainbow) * colour


def drop_factor(canvas: Canvas, scene: Scene) -> np.ndarray:
    """Multiplier for the aperture from the drops: meniscus bands, lens brightening, bare floor."""
    factor = np.ones((*canvas.shape, 3), np.float32)
    if scene.fills_well:
        return factor
    floor = 1.04
    factor *= floor
    xs, ys = canvas.grid
    for blob in scene.drops:
        x0, y0, x1, y1 = blob.bounds()
        (px0, py0), (px1, py1) = canvas.points([x0, y0]), canvas.points([x1, y1])
        cols = slice(max(int(px0), 0), min(int(np.ceil(px1)) + 1, canvas.width))
        rows = slice(max(int(py0), 0), min(int(np.ceil(py1)) + 1, canvas.height))
        if cols.start >= cols.stop or rows.start >= rows.stop:
            continue
        dx, dy = xs[:, cols] - blob.cx, ys[rows, :] - blob.cy
        ca, sa = np.cos(blob.angle), np.sin(blob.angle)
        along, across = ca * dx + sa * dy, -sa * dx + ca * dy
        rho = np.sqrt((along / blob.stretch) ** 2 + across**2) + 1e-3
        edge = np.ones_like(rho)
        if blob.wobble:
            theta = np.arctan2(across, along)
            for k, (amp, phase) in enumerate(zip(blob.wobble, blob.phases, strict=True), start=2):
                edge += amp * np.cos(k * theta + phase)
        depth = edge * blob.radius - rho  # reference pixels inside the edge
        inside = np.clip(0.5 + depth * canvas.u, 0.0, 1.0)
        band = np.exp(-np.maximum(depth, 0) / max(blob.meniscus * 0.45, 1.0))
        rim = np.exp(-(((depth - 2.5) / 1.6) ** 2))
        lens = 0.03 * np.clip(1 - (rho / blob.radius) ** 2, 0, 1)
        inner = (1.0 - blob.darkness * band) * (1.0 + lens) + 0.25 * blob.darkness * rim
        if blob.body != 1.0:
            inner = inner * np.float32(blob.body)
        tint = np.asarray((0.97, 1.0, 1.05), np.float32)  # the meniscus refracts a little blue
        local = 1.0 - (1.0 - inner[..., None]) * tint
        region = factor[rows, cols]
        region *= 1.0 + inside[..., None] * (local / floor - 1.0)
    return factor


def render_base(canvas: Canvas, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """The well and drop, without contents, as HxWx3 float32 in display units (about 0..1).

    The well structure gets its own (often stronger) focus blur; the drops, which are
    in the focal plane, are put in after it.
    """
    well = scene.well
    xs, ys = canvas.grid
    dx, dy = xs - well.cx, ys - well.cy
    r = aperture_norm(dx, dy, well.squareness)
    d = r - well.radius  # > 0 outside the aperture
    aa = 1.0 / canvas.u

    # Plate plastic in the corners; smooth fields are computed coarse and resized.
    image = canvas.smooth(lambda c: plate_light(c, scene))

    # The wall: a dark rounded square with an olive speckle and a soft outer edge.
    wx, wy = np.abs(dx - well.wall_dx) / well.wall_a, np.abs(dy - well.wall_dy) / well.wall_b
    s = (wx**well.wall_n + wy**well.wall_n) ** (1.0 / well.wall_n)
    s += 0.006 * _field(canvas, scene.fields["wall"])
    texture = grain(canvas, rng, 1.6)
    ragged = grain(canvas, rng, 6.0)
    soft = well.wall_soft / well.wall_a
    wall = 1.0 - smoothstep(1.0 - soft, 1.0 + soft, s + 0.15 * soft * ragged)
    outer = smoothstep(0.8, 1.0, s)
    speck = np.maximum(texture + 0.4, 0.0) * np.float32(0.014 * well.wall_grain) * (1.0 + outer)
    wall_rgb = np.stack([0.04 + speck, 0.038 + speck * 0.95, 0.056 + speck * 0.55], axis=-1)
    if well.slot:
        slot_x = well.wall_dx - well.wall_a + 55.0
        slot = smoothstep(-16, -4, -np.abs(dx - slot_x)) * smoothstep(-75, -40, -np.abs(dy - 20))
        slot = canvas.blur(slot, 6.0)
        wall_rgb += (
            slot[..., None] * np.float32(well.slot) * np.asarray((0.8, 0.85, 0.9), np.float32)
        )
    image += wall[..., None] * (wall_rgb - image)

    # Grey rim just outside the aperture (narrow at the top), a thin light line below.
    width = well.band_width * (0.7 + 0.3 * np.clip(dy / (r + 1e-3), -1.0, 1.0))
    band = 1.0 - smoothstep(-1.5, 1.5, d - width)
    side = 1.0 + 0.35 * np.clip(dx / well.radius, -1, 1)  # lighter towards the lamp side
    band_rgb = (np.float32(well.band_level) * side)[..., None] * np.asarray(
        (0.8, 0.86, 1.04), np.float32
    )
    lower = np.clip(dy / well.radius, 0.0, 1.0)
    line = np.exp(-(((d - 0.55 * well.band_width) / 2.2) ** 2)) * (0.35 + 0.65 * lower)
    line *= np.float32(well.line_level)
    image += band[..., None] * (band_rgb - image)
    image += line[..., None] * np.asarray((0.9, 0.9, 0.45), np.float32)

    # The lit aperture, darkening towards its edge, with the meniscus crescent at the bottom.
    inside = np.clip(0.5 - d / aa, 0.0, 1.0)
    lit = canvas.smooth(lambda c: aperture_light(c, scene))
    sx = dx + well.crescent * np.cos(well.crescent_angle)
    sy = dy + well.crescent * np.sin(well.crescent_angle)
    shifted = aperture_norm(sx, sy, well.squareness) - well.radius  # to the shadow outline
    lit *= (1.0 - well.limb * np.exp(np.minimum(d, 0) / 8.0))[..., None]
    if scene.dry is not None:
        rho = r / well.radius
        dry = 1.0 + scene.dry.hot * np.exp(-((rho / 0.45) ** 2)) - scene.dry.edge * rho**4
        dry -= scene.dry.ring_depth * np.exp(
            -(((rho - scene.dry.ring_radius) * well.radius / 3.0) ** 2)
        )
        lit *= dry[..., None]
    lit *= (1.0 - well.shade * np.exp(np.minimum(shifted, 0) / 25.0))[..., None]
    crescent = np.clip(0.5 + shifted / aa, 0.0, 1.0) * (1.0 - np.clip(d / aa + 0.5, 0, 1))
    lit += crescent[..., None] * (np.asarray((0.05, 0.05, 0.09), np.float32) - lit)
    image += inside[..., None] * (lit - image)
    image = canvas.blur(image, well.blur)
    if not scene.fills_well:
        inside = canvas.blur(inside, well.blur)
        image *= 1.0 + inside[..., None] * (drop_factor(canvas, scene) - 1.0)
    return image
