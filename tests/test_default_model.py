"""The shipped default model: its files and card, a one-crystal drop, the real plate."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import select

from imager_adapters.record import ImageRecord
from marco_svc import registry
from marco_svc.config import load_settings
from marco_svc.db.models import Score
from marco_svc.ingest import ingest
from marco_svc.labels import CRYSTAL_CLASSES_10, CRYSTALS, MARCO4
from marco_svc.nets.preprocessing import from_spec
from marco_svc.runtime import Runtime, open_runtime
from marco_svc.scoring.engine import ScoringEngine
from marco_svc.scoring.heatmaps import keras_model
from marco_svc.scoring.saliency import SmoothGradParams, grown_box, mass_inside, smoothgrad
from marco_svc.synth.render import render_drop
from tests.conftest import needs_shared

pytestmark = pytest.mark.slow

REAL_PLATE = Path(__file__).resolve().parents[2] / "shared/data/formulatrix_90j8"
# One crystal each, drawn at the imager's full frame; the seeds are the first ones tried.
ONE_CRYSTAL_DROPS = [("large crystals", 101), ("medium crystals", 102), ("large crystals", 103)]
# The shipped default learned the previous generator's dark, opaque crystals. The generator
# now draws transparent crystals with edge contrast (issue 17), and the shipped model misses
# this one (P(Crystals) below 0.5, 14% of the heatmap on it). Strict: once a default trained
# on the new generator ships (its int8 export is still under the 99% floor), this must pass.
MISSED_BY_THE_SHIPPED_DEFAULT = pytest.mark.xfail(
    strict=True, reason="the shipped default predates the realistic crystals (issue 17)"
)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    """An embedded SQLite service: the database plays no part in what is checked here."""
    rt = open_runtime(load_settings(env={}, data_dir=tmp_path / "data"))
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def default() -> registry.StoredModel:
    model = registry.default_shipped()
    assert model is not None, "models/DEFAULT names no shipped model"
    return model


def test_the_default_model_ships_verified_small_and_described(
    default: registry.StoredModel,
) -> None:
    card = default.card
    card.verify(default.folder)
    assert card.architecture == "compact-evidence-two-head"
    assert set(card.heads) == {"marco4", "merck10"}
    int8 = default.folder / card.artifacts["tflite-int8"].file
    assert int8.stat().st_size <= 5 * 1024 * 1024
    assert min(card.exports["tflite-int8"]["top1_agreement"].values()) >= 0.99
    assert card.provenance["synthetic_training_data"] is True
    assert card.metrics["evaluation"]["held_out_synthetic"]["examples"] > 500
    assert "fpr_0.016" in card.operating_points


def _score_one_crystal_drop(
    runtime: Runtime, model: registry.StoredModel, folder: Path, label: str, seed: int
) -> tuple[Score, float, bool]:
    """Ingest and score a one-crystal drop through the engine; its Crystals heatmap share."""
    drop = render_drop(label, seed, crystals=1)
    assert drop.jpeg is not None and len(drop.crystal_boxes) == 1
    path = folder / f"{seed}.jpg"
    path.write_bytes(drop.jpeg)
    record = ImageRecord(path, "ONEX1", "C3", 1, datetime(2026, 1, 2), "synthetic")
    assert ingest(runtime.db, record).outcome == "created"
    assert ScoringEngine(runtime, model).run_pending() == 1
    with runtime.db.session() as session:
        score = session.scalars(select(Score)).one()
        session.expunge(score)
    prep = from_spec(model.card.preprocessing)
    height, width = drop.image.shape[:2]
    box = grown_box(prep.input_box(drop.crystal_boxes[0], height, width), prep.size)
    x = prep.np_from_bytes(drop.jpeg)
    crystals = model.card.heads[MARCO4].index(CRYSTALS)
    heatmap = smoothgrad(keras_model(model), x, MARCO4, crystals, SmoothGradParams(n=50))
    return score, mass_inside(heatmap, box), _peak_inside(heatmap, box)


def _peak_inside(heatmap: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """Whether the brightest spot of the map (smoothed over ~5 px) lies in the box."""
    smooth = cv2.GaussianBlur(heatmap, (0, 0), 2.5)
    y, x = np.unravel_index(int(smooth.argmax()), smooth.shape)
    x0, y0, x1, y1 = box
    return bool(x0 <= x < x1 and y0 <= y < y1)


@pytest.mark.parametrize(
    ("label", "seed"),
    [
        pytest.param(*ONE_CRYSTAL_DROPS[0], marks=MISSED_BY_THE_SHIPPED_DEFAULT),
        *ONE_CRYSTAL_DROPS[1:],
    ],
)
def test_a_one_crystal_drop_is_a_hit_with_its_heatmap_brightest_near_the_crystal(
    runtime: Runtime, default: registry.StoredModel, tmp_path: Path, label: str, seed: int
) -> None:
    score, share, peak_inside = _score_one_crystal_drop(runtime, default, tmp_path, label, seed)
    assert score.hit, f"no hit: {score.probabilities} under {score.rule}"
    assert score.top_class in CRYSTAL_CLASSES_10
    assert peak_inside, f"the heatmap peaks outside the crystal (share inside {share:.0%})"


@MISSED_BY_THE_SHIPPED_DEFAULT
def test_half_the_heatmap_mass_lies_on_the_crystal(
    runtime: Runtime, default: registry.StoredModel, tmp_path: Path
) -> None:
    label, seed = ONE_CRYSTAL_DROPS[0]
    _, share, _ = _score_one_crystal_drop(runtime, default, tmp_path, label, seed)
    assert share >= 0.5


@needs_shared(REAL_PLATE)
@pytest.mark.shared
def test_on_the_real_clear_plate_it_calls_few_crystals_as_its_card_says(
    default: registry.StoredModel,
) -> None:
    from marco_svc.train.plate_check import top_label_shares

    files = sorted(REAL_PLATE.rglob("*.jpg"))
    assert len(files) == 96
    measured = top_label_shares(default, files, "tflite-int8")[MARCO4]
    recorded = default.card.metrics["unlabelled_plates"][REAL_PLATE.name]["tflite-int8"]
    assert measured == pytest.approx(recorded[MARCO4])
    assert measured[CRYSTALS] <= 0.05
