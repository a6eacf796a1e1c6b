"""Synthetic clear drops next to the real plate: the same image statistics, side by side.

    python bench/synth_realism.py [N_SYNTHETIC]

Needs ../shared/data/formulatrix_90j8 (or $MARCO_SHARED; skips with a message without
it). Prints, for the real plate's 96 drops and N synthetic clear drops rendered at full size, the
median of each statistic and the synthetic/real ratio.

Then, per imager look (marco_svc/synth/looks.py), frame statistics that need no drop
detection, with the real frames each look is modelled on beside it: the Rock Imager
plate for `formulatrix`, the two CHiMP crystal drops (grayscale, square sub-wells) for
`minstrel`. The other looks have no real frame here; their figures show the range they
randomise (cast, fill, vignetting, magnification).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from marco_svc.synth.background import detect_drop  # noqa: E402
from marco_svc.synth.render import render_drop  # noqa: E402

SHARED = Path(os.environ.get("MARCO_SHARED", ROOT.parent / "shared"))
REAL = SHARED / "data" / "formulatrix_90j8" / "90j8_2018-04-11_RI1000-0081-2drop"
CHIMP = SHARED / "data" / "chimp_crystal_refs"
LOOK_SIZE = (512, 612)  # frames are compared at this size (real ones resized to it)


def stats(rgb: np.ndarray, jpeg_bytes: int) -> dict[str, float]:
    """A dozen numbers that describe how a clear-drop frame looks."""
    img = rgb.astype(np.float32)
    grey = img.mean(axis=2)
    h, w = grey.shape
    cx, cy, r = detect_drop(rgb)
    yy, xx = np.mgrid[:h, :w]
    dist = np.hypot(xx - cx, yy - cy)
    inner = dist < 0.6 * r
    mean = img[inner].mean(axis=0)
    blurred = cv2.GaussianBlur(grey, (0, 0), 15)
    patch = grey[int(cy) - 60 : int(cy) + 60, int(cx) - 60 : int(cx) + 60]
    high = patch - cv2.GaussianBlur(patch, (0, 0), 2)
    wall = (dist > 1.12 * r) & (dist < 1.3 * r) & (grey < 80)
    wall_high = (grey - cv2.GaussianBlur(grey, (0, 0), 3))[wall]
    # Steepest radial fall at the drop edge: how sharp the sub-well edge is.
    ring = (dist > 0.9 * r) & (dist < 1.1 * r)
    gy, gx = np.gradient(cv2.GaussianBlur(grey, (0, 0), 1.0))
    radial = -(gx * (xx - cx) + gy * (yy - cy)) / np.maximum(dist, 1)
    return {
        "drop radius / height": r / h,
        "drop centre x / width": cx / w,
        "drop centre y / height": cy / h,
        "inner green level": mean[1] / 255,
        "inner R/G": mean[0] / mean[1],
        "inner B/G": mean[2] / mean[1],
        "inner shading spread": float(blurred[inner].std() / blurred[inner].mean()),
        "noise (high-pass std, 8-bit)": float(np.median(np.abs(high)) * 1.4826),
        "dark fraction (grey < 60)": float((grey < 60).mean()),
        "wall mean (8-bit)": float(grey[wall].mean()) if wall.any() else float("nan"),
        "wall texture std": float(wall_high.std()) if wall.any() else float("nan"),
        "corner level": float(np.concatenate([grey[:40, :40], grey[:40, -40:]]).mean() / 255),
        "edge steepness (8-bit/px)": float(np.percentile(radial[ring], 99)),
        "JPEG kB": jpeg_bytes / 1024,
    }


def main() -> None:
    if not REAL.is_dir():
        print(f"skipped: {REAL} is absent")
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 48
    real = []
    for path in sorted(REAL.glob("*.jpg")):
        data = path.read_bytes()
        rgb = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        real.append(stats(rgb, len(data)))
    synthetic = []
    for seed in range(n):
        drop = render_drop("clear", seed)
        synthetic.append(stats(drop.image, len(drop.to_jpeg())))
    print(f"{'statistic (median)':<30} {'real':>9} {'synthetic':>10} {'ratio':>7}")
    for key in real[0]:
        a = float(np.nanmedian([s[key] for s in real]))
        b = float(np.nanmedian([s[key] for s in synthetic]))
        lo_a, hi_a = np.nanpercentile([s[key] for s in real], [10, 90])
        lo_b, hi_b = np.nanpercentile([s[key] for s in synthetic], [10, 90])
        print(
            f"{key:<30} {a:>9.3f} {b:>10.3f} {b / a if a else float('nan'):>7.2f}"
            f"   real 10-90%: {lo_a:.3f}..{hi_a:.3f}  synthetic: {lo_b:.3f}..{hi_b:.3f}"
        )


def frame_stats(rgb: np.ndarray) -> dict[str, float]:
    """Look statistics of one frame at LOOK_SIZE: colour, light, wall, vignetting, noise."""
    img = rgb.astype(np.float32)
    grey = img.mean(axis=2)
    lit = grey > np.percentile(grey, 60)
    r, g, b = (img[..., c][lit].mean() for c in range(3))
    h, w = grey.shape
    centre = grey[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3]
    h8, w8 = h // 8, w // 8
    corners = np.concatenate([grey[:h8, :w8], grey[h - h8 :, w - w8 :]])
    high = grey - cv2.GaussianBlur(grey, (0, 0), 2)
    return {
        "colour (mean |R-B|, 8-bit)": float(np.abs(img[..., 0] - img[..., 2]).mean()),
        "lit R/G": r / g,
        "lit B/G": b / g,
        "lit level (90th pct)": float(np.percentile(grey, 90) / 255),
        "dark fraction (grey < 60)": float((grey < 60).mean()),
        "corner / centre level": float(corners.mean() / max(centre.mean(), 1.0)),
        "noise (high-pass MAD, lit)": float(np.median(np.abs(high[lit])) * 1.4826),
    }


def _resized(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]
    return cv2.resize(image, LOOK_SIZE[::-1], interpolation=cv2.INTER_AREA)


def per_look(n: int) -> None:
    """Median frame statistics per look over n clear and crystal drops, real beside them."""
    from marco_svc.synth.looks import LOOKS

    columns: dict[str, list[dict[str, float]]] = {}
    fills: dict[str, float] = {}
    for look in LOOKS:
        frames, fill = [], []
        for seed in range(n):
            label = "clear" if seed % 2 else "large crystals"
            drop = render_drop(label, seed, LOOK_SIZE, look=look)
            frames.append(frame_stats(drop.image))
            fill.append(np.pi * drop.radius**2 / (LOOK_SIZE[0] * LOOK_SIZE[1]))
        columns[look] = frames
        fills[look] = float(np.median(fill))
    real = {"90j8 (real)": REAL, "CHiMP (real)": CHIMP}
    for name, folder in real.items():
        if folder.is_dir():
            columns[name] = [frame_stats(_resized(p)) for p in sorted(folder.glob("*.jpg"))]
    names = list(columns)
    print(f"\nper look: median of {n} synthetic frames (half clear, half large crystals)")
    print(f"{'statistic (median)':<28}" + "".join(f"{k[:12]:>13}" for k in names))
    for key in next(iter(columns.values()))[0]:
        values = [float(np.median([s[key] for s in columns[k]])) for k in names]
        print(f"{key:<28}" + "".join(f"{v:>13.3f}" for v in values))
    print(f"{'drop area / frame':<28}" + "".join(f"{fills[k]:>13.3f}" for k in fills))
    print("modelled on: formulatrix <- 90j8 (real); minstrel <- CHiMP (real)")


if __name__ == "__main__":
    main()
    per_look(int(sys.argv[2]) if len(sys.argv) > 2 else 16)
