"""Image-quality checks that explain an "Other": too dark, overexposed, out of focus,
no drop found, drop cut off. Each check is a flag with its measured value and limit.

All measures are taken on a grey copy scaled so its longer side is 512 pixels, so the
limits do not depend on the imager's resolution. Focus is the variance of the Laplacian
after stretching the 1st..99th grey percentiles to 0..255, so a dark or dim image is
not mistaken for a blurred one. The default limits were set on the real Formulatrix
plate in ../shared/data (96 in-focus, well-exposed drops): mean grey 99..134, at most
0.5% saturated pixels, focus 64.4..(median) 87.5, which falls to <= 33.6 after a
2-pixel, <= 13.2 after a 3-pixel and <= 7.4 after a 4-pixel Gaussian blur.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

WORK_SIDE = 512


@dataclass(frozen=True)
class QualityLimits:
    dark_mean: float = 50.0
    overexposed_mean: float = 220.0
    overexposed_fraction: float = 0.25
    focus_laplacian_var: float = 20.0
    min_drop_fraction: float = 0.03
    min_drop_circularity: float = 0.5
    max_border_fraction: float = 0.5


@dataclass(frozen=True)
class DropCircle:
    """The drop, in the original image's pixel coordinates."""

    cx: float
    cy: float
    radius: float
    area_fraction: float
    circularity: float
    touches_border: bool


@dataclass
class QualityReport:
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    drop: DropCircle | None = None

    @property
    def flags(self) -> list[str]:
        """Names of the checks that failed."""
        return [name for name, check in self.checks.items() if check["flag"]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "flags": self.flags,
            "checks": self.checks,
            "drop": asdict(self.drop) if self.drop else None,
        }


def _grey_work_copy(image: np.ndarray) -> tuple[np.ndarray, float]:
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    scale = WORK_SIDE / max(grey.shape)
    size = (round(grey.shape[1] * scale), round(grey.shape[0] * scale))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA), scale


def find_drop(grey: np.ndarray, scale: float, limits: QualityLimits) -> DropCircle | None:
    """The largest bright, roughly round region, preferring one clear of the image border."""
    blurred = cv2.GaussianBlur(grey, (5, 5), 0)
    _, mask = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    height, width = grey.shape
    best: tuple[bool, int, int] | None = None
    for index in range(1, count):
        x, y, w, h, area = stats[index]
        if area < limits.min_drop_fraction * height * width:
            continue
        inside = x > 0 and y > 0 and x + w < width and y + h < height
        candidate = (inside, int(area), index)
        if best is None or candidate > best:
            best = candidate
    if best is None:
        return None
    component = (labels == best[2]).astype(np.uint8)
    contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    (cx, cy), radius = cv2.minEnclosingCircle(contour)
    area, perimeter = cv2.contourArea(contour), cv2.arcLength(contour, True)
    circularity = 4 * np.pi * area / perimeter**2 if perimeter else 0.0
    points = contour[:, 0, :]
    on_border = (
        (points[:, 0] == 0)
        | (points[:, 1] == 0)
        | (points[:, 0] == width - 1)
        | (points[:, 1] == height - 1)
    ).mean()
    # A cut-off drop meets the border along a chord; mostly-border regions are not drops.
    if circularity < limits.min_drop_circularity or on_border > limits.max_border_fraction:
        return None
    return DropCircle(
        cx=round(cx / scale, 1),
        cy=round(cy / scale, 1),
        radius=round(radius / scale, 1),
        area_fraction=round(area / (height * width), 4),
        circularity=round(float(circularity), 3),
        touches_border=not best[0],
    )


def focus_measure(grey: np.ndarray) -> float:
    """Variance of the Laplacian of the contrast-stretched grey image."""
    low, high = np.percentile(grey, [1, 99])
    stretched = (grey.astype(np.float64) - low) * (255.0 / max(high - low, 1.0))
    return float(cv2.Laplacian(stretched, cv2.CV_64F).var())


def _check(value: float, flag: bool, limit: float) -> dict[str, Any]:
    return {"flag": bool(flag), "value": round(float(value), 4), "limit": limit}


def assess(image: np.ndarray, limits: QualityLimits | None = None) -> QualityReport:
    """Run every check on a uint8 RGB (or grey) image."""
    limits = limits or QualityLimits()
    grey, scale = _grey_work_copy(image)
    mean = float(grey.mean())
    saturated = float((grey >= 250).mean())
    focus = focus_measure(grey)
    drop = find_drop(grey, scale, limits)
    report = QualityReport(drop=drop)
    report.checks["too_dark"] = _check(mean, mean < limits.dark_mean, limits.dark_mean)
    report.checks["overexposed"] = _check(
        saturated,
        saturated > limits.overexposed_fraction or mean > limits.overexposed_mean,
        limits.overexposed_fraction,
    )
    report.checks["out_of_focus"] = _check(
        focus, focus < limits.focus_laplacian_var, limits.focus_laplacian_var
    )
    found = drop is not None
    report.checks["no_drop"] = _check(
        drop.area_fraction if found else 0.0, not found, limits.min_drop_fraction
    )
    cut_off = found and (
        drop.touches_border
        or drop.cx - drop.radius < 0
        or drop.cy - drop.radius < 0
        or drop.cx + drop.radius > image.shape[1]
        or drop.cy + drop.radius > image.shape[0]
    )
    report.checks["drop_cut_off"] = _check(
        drop.circularity if found else 0.0, cut_off, limits.min_drop_circularity
    )
    return report


def quality_of(data: bytes, full_width: int | None = None) -> dict:
    """Quality flags from a half-size decode (the checks work on a 512-pixel copy anyway),
    with the drop in the coordinates of the full image when its width is given."""
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_2)
    if pixels is None:
        raise ValueError("OpenCV cannot decode the image")
    report = assess(cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)).to_dict()
    drop = report["drop"]
    if drop and full_width:
        factor = full_width / pixels.shape[1]
        for key in ("cx", "cy", "radius"):
            drop[key] = round(drop[key] * factor, 1)
    return report
