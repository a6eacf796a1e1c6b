"""Bad drops (MARCO "Other"): missing drop, out of focus, dark, overexposed, dispensing
failure, contaminated.

Each variant but the last is a change to the scene (the drop, the light or the
camera); the contents stay what they would be, mostly clear. A contaminated drop keeps
its scene: its contents are dark particles and debris (`distractors.draw_contamination`,
drawn by the renderer for that variant).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from marco_svc.synth.distractors import draw_contamination
from marco_svc.synth.film import Film, Region
from marco_svc.synth.scene import Blob, Dry, Scene

BAD_DROP_VARIANTS: tuple[str, ...] = (
    "no drop",
    "out of focus",
    "dark",
    "overexposed",
    "dispensing failure",
    "contaminated",
)
# Variants that only change the camera: the ones possible on a real background photo.
CAMERA_VARIANTS: tuple[str, ...] = ("out of focus", "dark", "overexposed")
DISPENSING_FAILURES: tuple[str, ...] = ("off centre", "split", "smeared")


def spoil(scene: Scene, variant: str, rng: np.random.Generator) -> tuple[Scene, str]:
    """The scene turned into a bad drop of the variant; returns it and the detail drawn."""
    u = rng.uniform
    well, light, camera = scene.well, scene.light, scene.camera
    if variant == "no drop":
        floor = Dry(hot=u(0.04, 0.14), edge=u(0.08, 0.25), ring_radius=u(0.5, 0.85),
                    ring_depth=u(0.04, 0.15))  # fmt: skip
        empty = replace(well, crescent=0.0, shade=0.0, limb=well.limb * 0.5)
        return scene.with_(well=empty, drops=(), fills_well=False, dry=floor), ""
    if variant == "out of focus":
        blurred = replace(camera, defocus=u(5.0, 18.0))
        return scene.with_(camera=blurred, well=replace(well, blur=well.blur + u(2, 10))), ""
    if variant == "dark":
        return scene.with_(light=replace(light, exposure=u(0.004, 0.08))), ""
    if variant == "overexposed":
        return scene.with_(light=replace(light, exposure=u(2.6, 9.0))), ""
    if variant == "dispensing failure":
        kind = str(rng.choice(DISPENSING_FAILURES))
        return scene.with_(drops=_failed_drops(scene, kind, rng), fills_well=False), kind
    if variant == "contaminated":  # the contents, not the scene, make it bad
        return scene, ""
    raise ValueError(
        f"unknown bad-drop variant {variant!r} (known: {', '.join(BAD_DROP_VARIANTS)})"
    )


def draw_contents(film: Film, region: Region, variant: str, rng: np.random.Generator) -> None:
    """What a bad drop of the variant holds: particles and debris when contaminated,
    nothing of its own otherwise."""
    if variant == "contaminated":
        draw_contamination(film, region, rng)


def _failed_drops(scene: Scene, kind: str, rng: np.random.Generator) -> tuple[Blob, ...]:
    u = rng.uniform
    well = scene.well

    def blob(cx: float, cy: float, radius: float, **kw: float) -> Blob:
        wobble = tuple(u(0, 0.06) for _ in range(3))
        phases = tuple(u(0, 2 * np.pi) for _ in range(3))
        return Blob(
            cx,
            cy,
            radius,
            wobble=wobble,
            phases=phases,
            meniscus=radius * u(0.05, 0.14),
            darkness=u(0.35, 0.75),
            **kw,
        )

    if kind == "off centre":  # landed on the side: cut off by the wall
        radius = well.radius * u(0.35, 0.75)
        angle = u(0, 2 * np.pi)
        dist = well.radius - radius + radius * u(0.3, 0.95)
        return (blob(well.cx + dist * np.cos(angle), well.cy + dist * np.sin(angle), radius),)
    if kind == "split":  # several small drops instead of one
        drops = []
        for _ in range(int(rng.integers(2, 5))):
            radius = well.radius * u(0.1, 0.35)
            angle, dist = u(0, 2 * np.pi), (well.radius - radius) * np.sqrt(u(0.05, 1))
            drops.append(
                blob(well.cx + dist * np.cos(angle), well.cy + dist * np.sin(angle), radius)
            )
        return tuple(drops)
    # smeared: a long streak with satellite droplets along it
    radius = well.radius * u(0.2, 0.4)
    angle = u(0, np.pi)
    stretch = u(1.7, 3.2)
    main = blob(well.cx + u(-60, 60), well.cy + u(-60, 60), radius, stretch=stretch, angle=angle)
    satellites = []
    for _ in range(int(rng.integers(2, 8))):
        t = u(-1, 1) * radius * stretch * 1.6
        r = radius * u(0.05, 0.2)
        satellites.append(blob(main.cx + t * np.cos(angle), main.cy + t * np.sin(angle), r))
    return (main, *satellites)
