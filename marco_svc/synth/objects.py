"""Non-crystalline contents: light and heavy precipitate, phase-separation droplets."""

from __future__ import annotations

import cv2
import numpy as np

from marco_svc.synth.canvas import smoothstep
from marco_svc.synth.film import Film, Region


def _drop_weight(film: Film, region: Region) -> np.ndarray:
    """1 inside the drop, fading to 0 at its edge."""
    xs, ys = film.canvas.grid
    rr = np.sqrt((xs - region.cx) ** 2 + (ys - region.cy) ** 2) / max(region.drop_radius, 1.0)
    return 1.0 - smoothstep(0.9, 1.0, rr)


def _grains(
    film: Film,
    region: Region,
    rng: np.random.Generator,
    density: np.ndarray,
    n: int,
    size: float,
    strength: tuple[float, float],
) -> np.ndarray:
    """Optical density of n grains scattered with probability `density` (HxW in 0..1)."""
    canvas = film.canvas
    pts = region.sample_many(rng, n, margin=-0.1 * region.drop_radius)
    pts = canvas.points(pts)
    weights = rng.uniform(*strength, n)
    keep_draw = rng.uniform(0, 1, n)
    ix = np.clip(pts[:, 0].astype(np.int64), 0, canvas.width - 1)
    iy = np.clip(pts[:, 1].astype(np.int64), 0, canvas.height - 1)
    keep = keep_draw < density[iy, ix]
    # Each grain absorbs 1 - exp(-strength) at its centre; its integral over the grain is
    # kept at any render size (a small render averages grains, it does not thicken them).
    radius = size * canvas.u
    loss = -np.expm1(-weights[keep]) * (2 * np.pi * radius * radius)
    sigma = max(radius, 0.5)
    flat = np.bincount(
        iy[keep] * canvas.width + ix[keep], weights=loss, minlength=canvas.width * canvas.height
    )
    od = flat.reshape(canvas.shape).astype(np.float32)
    return cv2.GaussianBlur(od, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


# Forms of light precipitate: a cloudy granular haze, or fine grain evenly over the drop.
LIGHT_FORMS: tuple[str, ...] = ("haze", "fine grain")
FINE_GRAIN_SHARE = 0.4


def draw_precipitate(
    film: Film, region: Region, rng: np.random.Generator, heavy: bool, form: str | None = None
) -> str:
    """Light: a granular haze or an even fine grain. Heavy: dense brown granular clumps.

    form: for light precipitate, one of LIGHT_FORMS (random when None). Returns the form.
    """
    if heavy:
        _heavy(film, region, rng)
        return "heavy"
    if form is None:
        form = LIGHT_FORMS[int(rng.random() < FINE_GRAIN_SHARE)]
    if form == "haze":
        _haze(film, region, rng)
    elif form == "fine grain":
        _fine_grain(film, region, rng)
    else:
        raise ValueError(f"unknown light precipitate form {form!r} (known: {LIGHT_FORMS})")
    return form


def draw_co_precipitate(
    film: Film, region: Region, rng: np.random.Generator, heavy_chance: float = 0.0
) -> str:
    """Precipitate beside other contents (crystals grow in it): light, or with
    `heavy_chance` a heavy one at reduced strength so what grew in it still shows.
    Returns what was drawn ("light precipitate" or "heavy precipitate")."""
    if rng.random() < heavy_chance:
        _heavy(film, region, rng, scale=rng.uniform(0.35, 0.75))
        return "heavy precipitate"
    draw_precipitate(film, region, rng, heavy=False)
    return "light precipitate"


def _cloud(film: Film, region: Region, rng: np.random.Generator, bias: float) -> np.ndarray:
    """Where grains are likely: a smooth cloud over the drop (0..1)."""
    cloud = film.canvas.smooth_field(rng, (5, 6))
    return np.clip(bias + 0.45 * cloud, 0.0, 1.0) * _drop_weight(film, region)


def _haze(film: Film, region: Region, rng: np.random.Generator) -> None:
    """A fine granular haze, denser in clouds."""
    u = rng.uniform
    density = _cloud(film, region, rng, u(0.35, 0.8))
    haze, n = u(0.02, 0.08), int(u(15_000, 50_000))
    colour = (u(0.85, 0.95), 1.0, u(1.05, 1.2))
    od = haze * density + _grains(film, region, rng, density, n, u(0.6, 1.3), (0.05, u(0.3, 0.7)))
    film.optical_density(od.astype(np.float32), colour)


def _fine_grain(film: Film, region: Region, rng: np.random.Generator) -> None:
    """Fine grain evenly over the whole drop at low contrast (easy to take for clear)."""
    u = rng.uniform
    density = _drop_weight(film, region) * np.float32(u(0.85, 1.0))
    area = np.pi * region.drop_radius**2
    n = int(area * u(0.01, 0.035))  # grains per square reference pixel
    od = _grains(film, region, rng, density, n, u(1.4, 3.2), (0.02, u(0.08, 0.24)))
    od += np.float32(u(0.0, 0.04)) * density
    film.optical_density(od.astype(np.float32), (u(0.88, 0.96), 1.0, u(1.02, 1.12)))


def _heavy(film: Film, region: Region, rng: np.random.Generator, scale: float = 1.0) -> None:
    """Dense brown granular clumps over much of the drop; `scale` thins it out."""
    u = rng.uniform
    density = _cloud(film, region, rng, u(0.7, 1.3))
    clumps = 0.7 * film.canvas.smooth_field(rng, (20, 24))
    clumps += 0.5 * film.canvas.smooth_field(rng, (56, 67))
    haze, n = u(0.08, 0.4), int(u(200_000, 500_000) * scale)
    colour = (u(0.72, 0.88), u(0.92, 1.0), u(1.08, 1.3))
    strength = (0.05, u(0.3, 0.8))
    threshold = u(-0.8, 0.3)
    lumps = smoothstep(threshold, threshold + u(1.4, 2.4), clumps) * density
    od = haze * density + lumps * np.float32(u(0.1, 0.5))
    od = od * np.float32(scale)
    density = density * (0.15 + 0.85 * lumps)
    od += _grains(film, region, rng, density, n, u(0.6, 1.3), strength)
    film.optical_density(od.astype(np.float32), colour)


def draw_phase_separation(
    film: Film, region: Region, rng: np.random.Generator, variant: str
) -> None:
    """Oily droplets with refractive rims: many small, few large; or a few big oil lenses."""
    u = rng.uniform
    if variant == "oil film":
        radii = list(u(50, max(0.45 * region.radius, 50), int(rng.integers(1, 5))))
        radii += list(3.0 * (1 - u(0, 1, int(rng.integers(10, 120)))) ** (-1 / 1.6))
    else:
        n = int(np.exp(u(np.log(25), np.log(450))))
        r_min = u(2.5, 6)
        r_max = u(12, 60)
        radii = list(np.minimum(r_min * (1 - u(0, 1, n)) ** (-1 / u(1.4, 2.4)), r_max))
    edge_bias = rng.random() < 0.4  # droplets gathered towards the drop edge
    rim = u(0.35, 0.75)
    focus = u(0.1, 0.45)
    body = u(0.92, 1.02)
    for radius in radii:
        radius = float(min(radius, 0.45 * region.radius))
        if edge_bias and rng.random() < 0.7:
            angle = u(0, 2 * np.pi)
            dist = region.radius - radius - abs(rng.normal(0, 0.12 * region.radius))
            dist = max(dist, 0.0)
            centre = (region.cx + dist * np.cos(angle), region.cy + dist * np.sin(angle))
        else:
            centre = region.sample(rng, margin=radius)
        droplet(film, centre, radius, rim * u(0.7, 1.1), focus * u(0.6, 1.2), body)


def droplet(
    film: Film,
    centre: tuple[float, float],
    radius: float,
    rim: float,
    focus: float,
    body: float,
    rim_width: float = 0.09,
) -> None:
    """A refractive droplet or bubble (reference pixels): dark rim, bright centre, faint halo."""
    canvas = film.canvas
    c = canvas.points(centre)
    reach = radius * 1.3 * canvas.u + 2
    x0, x1 = max(int(c[0] - reach), 0), min(int(np.ceil(c[0] + reach)) + 1, canvas.width)
    y0, y1 = max(int(c[1] - reach), 0), min(int(np.ceil(c[1] + reach)) + 1, canvas.height)
    if x1 <= x0 or y1 <= y0:
        return
    xs = (np.arange(x0, x1, dtype=np.float32) + 0.5 - c[0])[None, :]
    ys = (np.arange(y0, y1, dtype=np.float32) + 0.5 - c[1])[:, None]
    rho = np.sqrt(xs * xs + ys * ys) / max(radius * canvas.u, 0.3)
    width = max(rim_width, 1.2 / max(radius * canvas.u, 0.3))
    transmit = 1.0 + focus * np.exp(-((rho / 0.42) ** 2))
    transmit -= rim * np.exp(-(((rho - 0.92) / width) ** 2))
    transmit += 0.08 * np.exp(-(((rho - 1.12) / (width * 1.2)) ** 2))
    inside = np.clip((1.0 - rho) * radius * canvas.u + 0.5, 0.0, 1.0)
    transmit *= 1.0 + inside * (body - 1.0)
    film.multiply(slice(y0, y1), slice(x0, x1), np.maximum(transmit, 0.03))
