"""Render one synthetic drop image of a ten-way class, with its ground truth.

`render_drop(label, seed)` is a pure function of its arguments: the same label, seed,
size and background give byte-identical pixels (every random draw comes from
`numpy.random.default_rng` streams keyed by the seed; no global state, no clock).
The well, the light and the camera depend on the seed alone, so one seed rendered
as two classes shows the same well with different contents.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from marco_svc.labels import CRYSTAL_CLASSES_10, MERCK10_LABELS, TEN_TO_FOUR
from marco_svc.synth import bad, objects
from marco_svc.synth.background import Background
from marco_svc.synth.camera import (
    JPEG_MIN_SCALE,
    JPEG_NOISE_KEPT,
    add_noise,
    decode_jpeg,
    encode_jpeg,
    expose,
    to_uint8,
)
from marco_svc.synth.canvas import FULL_SIZE, Canvas, stream
from marco_svc.synth.crystals import draw_crystals, draw_microcrystals, draw_needles_and_plates
from marco_svc.synth.distractors import draw_distractors
from marco_svc.synth.film import Box, Film, Region
from marco_svc.synth.looks import DEFAULT_LOOK, apply_look, monochrome, vignette
from marco_svc.synth.marking import comment
from marco_svc.synth.scene import Scene, render_base, sample_scene

LABELS: tuple[str, ...] = MERCK10_LABELS
VARIANTS: dict[str, tuple[str, ...]] = {
    "bad drop": bad.BAD_DROP_VARIANTS,
    "needles & plates": ("needles", "plates", "needles and plates"),
    "phase separation": ("droplets", "oil film"),
}
# Stream keys: one independent random stream per part of a render.
_SCENE, _TEXTURE, _VARIANT, _CONTENT, _EXTRAS, _NOISE, _LOOK = range(1, 8)
# Quality of the JPEG written for a render too small to have simulated compression.
SMALL_JPEG_QUALITY = 95


@dataclass(frozen=True, eq=False)
class Drop:
    """A rendered drop: uint8 RGB pixels and what is in them (pixel units of `image`)."""

    image: np.ndarray
    label: str  # ten-way (Merck)
    seed: int
    variant: str  # e.g. "out of focus" for a bad drop, "" when the class has none
    centre: tuple[float, float]  # drop centre (x, y)
    radius: float  # drop radius; 0 when there is no drop
    well_centre: tuple[float, float]
    well_radius: float
    crystal_boxes: tuple[Box, ...]  # (x0, y0, x1, y1) per crystal (per cluster for micro)
    params: dict[str, Any]
    jpeg: bytes | None = None  # the encoded frame when compression was simulated
    look: str = "formulatrix"  # the imager look (looks.py)

    @property
    def label4(self) -> str:
        """The MARCO four-way label (labels.TEN_TO_FOUR)."""
        return TEN_TO_FOUR[self.label]

    @property
    def size(self) -> tuple[int, int]:
        return (int(self.image.shape[0]), int(self.image.shape[1]))

    def to_jpeg(self) -> bytes:
        """JPEG bytes carrying the synthetic-image comment."""
        if self.jpeg is not None:
            return self.jpeg
        return encode_jpeg(
            self.image, SMALL_JPEG_QUALITY, comment(self.label, self.seed, self.variant)
        )

    def truth(self) -> dict[str, Any]:
        """One flat row of ground truth (boxes rounded to 0.1 pixel)."""
        return {
            "label": self.label,
            "label4": self.label4,
            "variant": self.variant,
            "seed": self.seed,
            "height": self.size[0],
            "width": self.size[1],
            "drop_x": round(self.centre[0], 1),
            "drop_y": round(self.centre[1], 1),
            "drop_radius": round(self.radius, 1),
            "crystal_boxes": [[round(v, 1) for v in box] for box in self.crystal_boxes],
            "look": self.look,
        }


def render_drop(
    label: str,
    seed: int,
    size: Sequence[int] = FULL_SIZE,
    background: np.ndarray | Background | None = None,
    *,
    variant: str | None = None,
    crystals: int | None = None,
    distractors: bool = True,
    look: str = DEFAULT_LOOK,
) -> Drop:
    """Render a drop of a ten-way class.

    size: (height, width); the scene is drawn at that size directly (no downscaling).
    background: a real clear-drop image (its drop is found) or a Background; the
        contents are drawn into its drop instead of a synthetic well.
    variant: a sub-kind (see VARIANTS), random when None.
    crystals: for crystal classes, how many crystals (micro: clusters; needles: needles).
    distractors: False for no fibres, dust, bubbles or co-occurring precipitate.
    look: the imager look (looks.LOOKS): sub-well shape, magnification, light, sensor.
    """
    if label not in LABELS:
        raise ValueError(f"unknown ten-way label {label!r} (known: {', '.join(LABELS)})")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    seed = int(seed)
    if crystals is not None and (label not in CRYSTAL_CLASSES_10 or crystals < 1):
        raise ValueError("crystals= takes a positive count, for crystal classes only")
    Canvas.of(size)  # checks the size before any work
    key = LABELS.index(label)
    backdrop = _as_background(background)
    if backdrop is not None and look != DEFAULT_LOOK:
        raise ValueError("a real background keeps its own look: pass no look with it")
    variant = _variant(label, variant, stream(seed, _VARIANT, key), backdrop is not None, crystals)
    scene = apply_look(look, sample_scene(stream(seed, _SCENE)), stream(seed, _LOOK))
    canvas = Canvas.of(size, scene.zoom)
    detail = ""
    if label == "bad drop":
        scene, detail = bad.spoil(scene, variant, stream(seed, _VARIANT, key, 1))

    if backdrop is None:
        base = render_base(canvas, scene, stream(seed, _TEXTURE))
        region, drop_circle, well_circle = _scene_regions(scene)
    else:
        base, region, drop_circle = _background_base(canvas, backdrop)
        well_circle = drop_circle

    film = Film(canvas)
    rng = stream(seed, _CONTENT, key)
    boxes = _contents(film, label, variant, region, rng, crystals)
    drawn: list[str] = []
    if distractors:
        extras = stream(seed, _EXTRAS, key)
        drawn = draw_distractors(film, _distractor_region(region, well_circle), extras)
        if _co_precipitate(label, variant, extras):
            heavy = 0.3 if label in CRYSTAL_CLASSES_10 else 0.0
            drawn.append(objects.draw_co_precipitate(film, region, extras, heavy_chance=heavy))

    film.t = canvas.blur(film.t, scene.camera.focus)
    image = base * film.t
    image = canvas.blur(image, scene.camera.defocus)
    image = vignette(expose(image, scene.light.exposure), scene)
    compress = canvas.scale >= JPEG_MIN_SCALE
    noise = scene.camera.noise * (0.5 if backdrop is not None else 1.0)
    noise *= 1.0 if compress else JPEG_NOISE_KEPT  # JPEG smooths some noise away
    image = monochrome(add_noise(canvas, image, noise, stream(seed, _NOISE)), scene)
    pixels = to_uint8(image)
    jpeg = None
    if compress:
        jpeg = encode_jpeg(pixels, scene.camera.jpeg_quality, comment(label, seed, variant))
        pixels = decode_jpeg(jpeg)

    to_px = canvas.points
    return Drop(
        image=pixels,
        label=label,
        seed=seed,
        variant=variant,
        centre=_pair(to_px(drop_circle[:2])),
        radius=float(drop_circle[2] * canvas.u),
        well_centre=_pair(to_px(well_circle[:2])),
        well_radius=float(well_circle[2] * canvas.u),
        crystal_boxes=tuple(boxes),
        params=_params(scene, canvas, variant, detail, drawn, backdrop),
        jpeg=jpeg,
        look=scene.look,
    )


def _pair(xy: np.ndarray) -> tuple[float, float]:
    return (float(xy[0]), float(xy[1]))


def _as_background(background: np.ndarray | Background | None) -> Background | None:
    if background is None or isinstance(background, Background):
        return background
    return Background.of(background)


def _variant(
    label: str, chosen: str | None, rng: np.random.Generator, real: bool, crystals: int | None
) -> str:
    options = VARIANTS.get(label, ("",))
    if real and label == "bad drop":
        options = bad.CAMERA_VARIANTS
    if crystals == 1 and label == "needles & plates":
        options = ("needles", "plates")  # one crystal cannot be both
    if chosen is None:
        return str(options[int(rng.integers(len(options)))])
    if chosen not in options:
        where = " on a real background" if real and label == "bad drop" else ""
        raise ValueError(
            f"{label!r} has no variant {chosen!r}{where} (known: {', '.join(options) or 'none'})"
        )
    return chosen


def _scene_regions(
    scene: Scene,
) -> tuple[Region, tuple[float, float, float], tuple[float, float, float]]:
    well = (scene.well.cx, scene.well.cy, scene.well.radius)
    drop = scene.drop_circle()
    cx, cy, r = scene.content_region()
    return Region(cx, cy, max(r, 0.0), drop[2] * 0.97), drop, well


def _background_base(
    canvas: Canvas, backdrop: Background
) -> tuple[np.ndarray, Region, tuple[float, float, float]]:
    h, w = backdrop.image.shape[:2]
    resized = cv2.resize(
        backdrop.image, (canvas.width, canvas.height), interpolation=cv2.INTER_AREA
    )
    base = resized.astype(np.float32) * np.float32(1 / 255)
    sx, sy = canvas.width / w, canvas.height / h
    px, py = backdrop.centre[0] * sx, backdrop.centre[1] * sy
    radius = backdrop.radius * (sx + sy) / 2 / canvas.u
    cx, cy = (px - canvas.width / 2) / canvas.u, (py - canvas.height / 2) / canvas.u
    return base, Region(cx, cy, 0.82 * radius, 0.95 * radius), (cx, cy, radius)


def _distractor_region(region: Region, well: tuple[float, float, float]) -> Region:
    """Where dust and fibres go: the drop, or the whole sub-well when there is no drop."""
    if region.drop_radius > 0:
        return region
    return Region(well[0], well[1], 0.85 * well[2], 0.95 * well[2])


def _contents(
    film: Film,
    label: str,
    variant: str,
    region: Region,
    rng: np.random.Generator,
    count: int | None,
) -> list[Box]:
    if label == "bad drop" and region.drop_radius > 0:
        bad.draw_contents(film, region, variant, rng)
    if region.drop_radius <= 0 or label in ("clear", "bad drop"):
        return []
    if label == "light precipitate":
        objects.draw_precipitate(film, region, rng, heavy=False)
    elif label == "heavy precipitate":
        objects.draw_precipitate(film, region, rng, heavy=True)
    elif label == "phase separation":
        objects.draw_phase_separation(film, region, rng, variant)
    elif label == "micro crystals":
        return draw_microcrystals(film, region, rng, count)
    elif label == "needles & plates":
        return draw_needles_and_plates(film, region, rng, variant, count)
    else:
        return draw_crystals(film, region, rng, label, count)
    return []


def _co_precipitate(label: str, variant: str, rng: np.random.Generator) -> bool:
    """Crystals often grow in a little precipitate; bad drops hold whatever there is."""
    chance = 0.2 if label in CRYSTAL_CLASSES_10 else 0.25 if label == "bad drop" else 0.0
    draw = rng.random()
    return draw < chance and variant not in ("no drop",)


def _params(
    scene: Scene,
    canvas: Canvas,
    variant: str,
    detail: str,
    drawn: list[str],
    backdrop: Background | None,
) -> dict[str, Any]:
    """The parameters behind the render, JSON-ready (reference-pixel units)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, float | np.floating):
            return round(float(value), 4)
        if isinstance(value, np.integer):
            return int(value)
        return value

    return {
        "size": [canvas.height, canvas.width],
        "scale": round(canvas.u, 6),
        "variant": variant,
        "detail": detail,
        "distractors": drawn,
        "background": backdrop.name if backdrop is not None else None,
        "look": scene.look,
        "zoom": round(scene.zoom, 4),
        "vignette": round(scene.vignette, 4),
        "grayscale": scene.grayscale,
        "well": plain(scene.well),
        "fills_well": scene.fills_well,
        "drops": plain(scene.drops),
        "light": plain(scene.light),
        "camera": plain(scene.camera),
    }
