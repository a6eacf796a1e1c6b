"""Imager looks: each renders deterministically, shows what it claims, and mixes into sets."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from marco_svc.synth.dataset import plan, write_dataset
from marco_svc.synth.looks import DEFAULT_LOOK, LOOKS
from marco_svc.synth.render import render_drop

SIZE = (128, 153)


@pytest.mark.parametrize("look", sorted(LOOKS))
def test_every_look_renders_the_same_bytes_for_the_same_seed(look: str) -> None:
    first = render_drop("small crystals", 5, SIZE, look=look)
    again = render_drop("small crystals", 5, SIZE, look=look)
    other = render_drop("small crystals", 6, SIZE, look=look)
    assert first.look == look and first.truth()["look"] == look
    assert first.to_jpeg() == again.to_jpeg()
    assert not np.array_equal(first.image, other.image)
    assert first.crystal_boxes  # the crystals are placed inside the look's drop


def test_the_default_look_is_the_original_rock_imager_render() -> None:
    plain = render_drop("clear", 9, SIZE)
    named = render_drop("clear", 9, SIZE, look=DEFAULT_LOOK)
    assert np.array_equal(plain.image, named.image)
    assert plain.params["zoom"] == 1.0 and not plain.params["grayscale"]


@pytest.mark.parametrize("look", ["minstrel", "formulatrix"])
def test_a_monochrome_look_has_equal_channels_and_a_colour_one_does_not(look: str) -> None:
    image = render_drop("clear", 3, SIZE, look=look).image.astype(int)
    spread = np.abs(image[..., 0] - image[..., 2]).mean()
    # JPEG chroma rounding leaves at most a level's difference in a grey frame
    assert (spread < 1.0) == (look == "minstrel")


def test_magnification_changes_how_much_of_the_frame_the_drop_fills() -> None:
    seeds = range(12)
    wide = [render_drop("clear", s, SIZE, look="wide").radius for s in seeds]
    close = [render_drop("clear", s, SIZE, look="close").radius for s in seeds]
    base = [render_drop("clear", s, SIZE).radius for s in seeds]
    assert np.median(wide) < 0.85 * np.median(base) < 0.85 * np.median(close)


def test_the_polariser_look_tints_the_frame() -> None:
    casts = []
    for seed in range(8):
        image = render_drop("clear", seed, SIZE, look="polariser").image.astype(float)
        centre = image[40:90, 50:100].reshape(-1, 3).mean(axis=0)
        casts.append(abs(centre[0] / centre[1] - 1))
    assert np.median(casts) > 0.08  # pink or green; the plain lamp is within a few percent


def _diagonal_levels(look: str, seed: int) -> list[float]:
    """Grey levels at 1.2 aperture radii from the well centre, on the four diagonals."""
    drop = render_drop("clear", seed, (256, 306), look=look)
    grey = drop.image.mean(axis=2)
    (cx, cy), radius = drop.well_centre, drop.well_radius
    reach = 1.2 * radius / np.sqrt(2)
    return [
        float(grey[int(cy + sy * reach), int(cx + sx * reach)]) for sx in (-1, 1) for sy in (-1, 1)
    ]


def test_a_square_sub_well_is_lit_into_its_corners_where_a_round_one_is_wall() -> None:
    square = _diagonal_levels("minstrel", 2)
    round_ = _diagonal_levels("formulatrix", 2)
    assert min(square) > 90 and max(round_) < 60, (square, round_)


def test_looks_mix_into_a_set_without_changing_labels_or_seeds(tmp_path: Path) -> None:
    mixed = plan(200, seed=4, looks={"formulatrix": 1, "minstrel": 1, "hanging": 2})
    plain = plan(200, seed=4)
    assert [(i.label, i.seed) for i in mixed] == [(i.label, i.seed) for i in plain]
    counts = Counter(item.look for item in mixed)
    assert set(counts) == {"formulatrix", "minstrel", "hanging"}
    assert counts["hanging"] > counts["minstrel"]
    manifest = write_dataset(tmp_path, 12, seed=1, size=(64, 77), looks={"close": 1.0})
    with manifest.open() as handle:
        assert {row["look"] for row in csv.DictReader(handle)} == {"close"}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: render_drop("clear", 1, SIZE, look="bogus"), "unknown imager look"),
        (lambda: plan(5, looks={"bogus": 1.0}), "unknown imager looks"),
        (lambda: plan(5, looks={"minstrel": 0.0}), "positive share"),
        (
            lambda: render_drop("clear", 1, SIZE, np.full((64, 77, 3), 200, np.uint8), look="wide"),
            "real background",
        ),
    ],
)
def test_bad_looks_are_refused_with_a_reason(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]
