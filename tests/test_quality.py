"""Image-quality checks on the real plate and on degraded copies of it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from marco_svc.scoring.quality import assess
from tests.conftest import REAL_PLATE_IMAGES, needs_real_plate


def real_images() -> list[np.ndarray]:
    return [
        cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        for path in sorted(REAL_PLATE_IMAGES.glob("*.jpg"))
    ]


@pytest.fixture(scope="module")
def real() -> list[np.ndarray]:
    return real_images()


@needs_real_plate
def test_real_plate_passes_every_check(real: list[np.ndarray]) -> None:
    reports = [assess(image) for image in real]
    assert len(reports) == 96
    assert [r.flags for r in reports if r.flags] == []
    for report in reports:
        drop = report.drop
        assert drop is not None and not drop.touches_border
        # The drop sits near the middle of the 1224x1024 frame and fills most of the well.
        assert 550 < drop.cx < 700 and 450 < drop.cy < 600 and 400 < drop.radius < 500


def degrade(image: np.ndarray, how: str) -> np.ndarray:
    height, width = image.shape[:2]
    gradient = np.linspace(0, 255, width, dtype=np.float32)
    return {
        "dark": lambda: (image * 0.2).astype(np.uint8),
        "overexposed": lambda: np.clip(image.astype(np.int32) * 3, 0, 255).astype(np.uint8),
        "blurred": lambda: cv2.GaussianBlur(image, (0, 0), 4),
        "cut_left": lambda: np.ascontiguousarray(image[:, width // 2 :]),
        "cut_bottom": lambda: np.ascontiguousarray(image[: height * 2 // 5]),
        "empty": lambda: np.full_like(image, 128),
        "gradient": lambda: np.repeat(
            np.broadcast_to(gradient, (height, width))[..., None], 3, axis=2
        ).astype(np.uint8),
    }[how]()


@needs_real_plate
@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("dark", {"too_dark"}),
        ("overexposed", {"overexposed"}),
        ("blurred", {"out_of_focus"}),
        ("cut_left", {"drop_cut_off"}),
        ("cut_bottom", {"drop_cut_off"}),
        ("empty", {"no_drop", "out_of_focus"}),
        ("gradient", {"no_drop", "out_of_focus"}),
    ],
)
def test_degraded_images_are_flagged(real: list[np.ndarray], how: str, expected: set) -> None:
    for image in real[::24]:
        report = assess(degrade(image, how))
        assert set(report.flags) == expected, (how, report.checks)
        check = report.checks[next(iter(expected))]
        assert check["flag"] is True and "value" in check and "limit" in check


def test_report_is_json_ready() -> None:
    image = np.zeros((200, 240, 3), np.uint8)
    cv2.circle(image, (120, 100), 70, (200, 200, 210), -1)
    noise = np.random.default_rng(0).integers(0, 40, image.shape, dtype=np.uint8)
    report = assess(cv2.add(image, noise)).to_dict()
    assert report["flags"] == []
    assert report["drop"]["radius"] == pytest.approx(70, abs=4)
    assert set(report["checks"]) == {
        "too_dark",
        "overexposed",
        "out_of_focus",
        "no_drop",
        "drop_cut_off",
    }
