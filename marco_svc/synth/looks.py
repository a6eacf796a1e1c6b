"""Imager looks: the same drop as different imagers, optics and plates would show it.

A look turns a sampled Rock-Imager scene (scene.py) into another imager's frame:
the sub-well's shape, the magnification (how much of the frame the drop fills), the
lamp's colour (polariser tints), vignetting, focus, exposure and a monochrome camera.
Domain randomisation: a model trained over several looks learns the drop's contents
rather than one camera. `formulatrix` is the generator's original look, unchanged.

Add a look with `register_look(Look(...))`; renders stay pure functions of the seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from marco_svc.synth.scene import Blob, Scene, Well

Adapt = Callable[[Scene, np.random.Generator], Scene]


@dataclass(frozen=True)
class ImagerLook:
    """A named imager look and how it changes a scene."""

    name: str
    summary: str
    adapt: Adapt


def _camera(
    scene: Scene,
    rng: np.random.Generator,
    noise: tuple[float, float] = (0.008, 0.03),
    **light: float,
) -> Scene:
    """Wider focus and exposure than the Rock Imager's, plus the look's light changes."""
    u = rng.uniform
    camera = replace(scene.camera, focus=u(0.0, 2.5), noise=u(*noise))
    changed = replace(scene.light, exposure=u(0.8, 1.2), **light)
    return scene.with_(camera=camera, light=changed)


def _neutral_cast(rng: np.random.Generator) -> tuple[float, float, float]:
    u = rng.uniform
    return (u(0.93, 1.04), 1.0, u(0.95, 1.1))


def _off_centre_drop(rng: np.random.Generator, well: Well, big: float, small: float) -> Blob:
    """A drop dispensed off the aperture's centre, often running under its edge."""
    u = rng.uniform
    radius = well.radius * u(small, big)
    angle = u(0, 2 * np.pi)
    dist = max(well.radius - radius * u(0.5, 1.05), 0.0) * np.sqrt(u(0, 1))
    return Blob(
        cx=well.cx + dist * np.cos(angle),
        cy=well.cy + dist * np.sin(angle),
        radius=radius,
        stretch=u(1.0, 1.35),
        angle=u(0, np.pi),
        wobble=tuple(u(0, 0.07) for _ in range(3)),
        phases=tuple(u(0, 2 * np.pi) for _ in range(3)),
        meniscus=radius * u(0.2, 0.55),
        darkness=u(0.45, 0.8),
        body=u(0.62, 0.92),
    )


def minstrel(scene: Scene, rng: np.random.Generator) -> Scene:
    """A monochrome imager (Rigaku Minstrel-like, 2532x2028): square sub-well, white light,
    black walls, a lens-dark drop off the centre."""
    u = rng.uniform
    well = replace(
        scene.well,
        squareness=u(5.0, 12.0),
        wall_a=scene.well.radius + u(250, 400),  # black to the frame's edges
        wall_b=scene.well.radius + u(250, 400),
        wall_n=u(6.0, 10.0),
        crescent=0.0,
        band_level=u(0.02, 0.12),
        line_level=u(0.0, 0.08),
        slot=0.0,
        limb=u(0.0, 0.06),
        shade=0.0,
    )
    drop = _off_centre_drop(rng, well, 0.85, 0.45)
    scene = _camera(
        scene,
        rng,
        noise=(0.004, 0.015),
        level=u(0.8, 0.95),
        cast=(1.0, 1.0, 1.0),
        rainbow=0.0,
        fall=0.0,
    )
    return scene.with_(
        well=well,
        drops=(drop,),
        fills_well=False,
        zoom=u(0.95, 1.3),
        vignette=u(0.0, 0.25),
        grayscale=True,
    )


def polariser(scene: Scene, rng: np.random.Generator) -> Scene:
    """A Rock-Imager frame through partly crossed polarisers: a pink or green cast."""
    u = rng.uniform
    pink = rng.random() < 0.5
    cast = (u(1.1, 1.3), 1.0, u(1.05, 1.25)) if pink else (u(0.75, 0.9), 1.0, u(0.75, 0.95))
    scene = _camera(
        scene, rng, level=u(0.5, 0.75), cast=cast, rainbow=u(0.03, 0.12), plate_rainbow=u(0, 0.1)
    )
    return scene.with_(zoom=u(0.9, 1.15), vignette=u(0.0, 0.3))


def wide(scene: Scene, rng: np.random.Generator) -> Scene:
    """Low magnification: the whole well and some plate around it; the drop is small."""
    u = rng.uniform
    gray = rng.random() < 0.4
    scene = _camera(scene, rng, cast=_neutral_cast(rng))
    return scene.with_(zoom=u(0.5, 0.8), vignette=u(0.1, 0.45), grayscale=gray)


def close(scene: Scene, rng: np.random.Generator) -> Scene:
    """High magnification: the drop fills most of the frame, the well's edges leave it."""
    u = rng.uniform
    gray = rng.random() < 0.4
    scene = _camera(scene, rng, cast=_neutral_cast(rng))
    square = rng.random() < 0.3
    well = replace(scene.well, squareness=u(5.0, 10.0)) if square else scene.well
    return scene.with_(well=well, zoom=u(1.35, 2.1), vignette=u(0.0, 0.3), grayscale=gray)


def hanging(scene: Scene, rng: np.random.Generator) -> Scene:
    """A hanging drop seen through its cover slip: no sub-well, a wide lit field, one
    round drop with a broad dark meniscus."""
    u = rng.uniform
    well = replace(
        scene.well,
        radius=u(900.0, 1300.0),
        crescent=0.0,
        shade=0.0,
        slot=0.0,
        band_level=u(0.1, 0.3),
        limb=u(0.05, 0.2),
        blur=u(6.0, 20.0),
        cx=u(-80, 80),
        cy=u(-80, 80),
    )
    radius = u(220.0, 420.0)
    drop = Blob(
        cx=u(-120, 120),
        cy=u(-100, 100),
        radius=radius,
        stretch=u(1.0, 1.12),
        angle=u(0, np.pi),
        wobble=tuple(u(0, 0.03) for _ in range(3)),
        phases=tuple(u(0, 2 * np.pi) for _ in range(3)),
        meniscus=radius * u(0.12, 0.35),
        darkness=u(0.55, 0.9),
        body=u(0.85, 1.0),
    )
    gray = rng.random() < 0.5
    scene = _camera(scene, rng, level=u(0.7, 0.9), cast=_neutral_cast(rng), fall=u(0, 0.1))
    return scene.with_(
        well=well,
        drops=(drop,),
        fills_well=False,
        zoom=u(0.9, 1.3),
        vignette=u(0.1, 0.4),
        grayscale=gray,
    )


LOOKS: dict[str, ImagerLook] = {}


def register_look(look: ImagerLook) -> None:
    """Make a look available by name (render_drop(look=...), data set look mixes)."""
    LOOKS[look.name] = look


for _look in (
    ImagerLook("formulatrix", "Rock Imager 1000 colour frame, round sub-well", lambda s, _: s),
    ImagerLook("minstrel", "monochrome, square sub-well, lens-dark off-centre drop", minstrel),
    ImagerLook("polariser", "Rock-Imager frame with a pink or green polariser cast", polariser),
    ImagerLook("wide", "low magnification: whole well, small drop, vignetting", wide),
    ImagerLook("close", "high magnification: the drop fills the frame", close),
    ImagerLook("hanging", "hanging drop over a cover slip, no sub-well", hanging),
):
    register_look(_look)

DEFAULT_LOOK = "formulatrix"


def apply_look(name: str, scene: Scene, rng: np.random.Generator) -> Scene:
    """The scene as the named look shows it (the scene itself for the default look)."""
    if name not in LOOKS:
        raise ValueError(f"unknown imager look {name!r} (known: {', '.join(LOOKS)})")
    if name == DEFAULT_LOOK:
        return scene
    return LOOKS[name].adapt(scene, rng).with_(look=name)


def vignette(image: np.ndarray, scene: Scene) -> np.ndarray:
    """Darken the linear frame towards its corners as the look's optics do."""
    if not scene.vignette:
        return image
    h, w = image.shape[:2]
    ys = (np.arange(h, dtype=np.float32) - h / 2) / (h / 2)
    xs = (np.arange(w, dtype=np.float32) - w / 2) / (w / 2)
    reach = (xs[None, :] ** 2 + ys[:, None] ** 2) / 2
    return image * (1.0 - np.float32(scene.vignette) * reach)[..., None]


def monochrome(image: np.ndarray, scene: Scene) -> np.ndarray:
    """The frame of a monochrome sensor: luminance in all three channels."""
    if not scene.grayscale:
        return image
    grey = image @ np.asarray((0.299, 0.587, 0.114), np.float32)
    return np.repeat(grey[..., None], 3, axis=2)
