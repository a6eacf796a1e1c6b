"""The shipped default model: its files and card, a one-crystal drop, the real plate."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from imager_adapters.record import ImageRecord
from marco_svc import model_store
from marco_svc.db.models import Score
from marco_svc.ingest import ingest
from marco_svc.labels import CRYSTALS, MARCO4
from marco_svc.nets.preprocessing import from_spec
from marco_svc.runtime import Runtime
from marco_svc.scoring.engine import ScoringEngine
from marco_svc.scoring.heatmaps import keras_model
from marco_svc.scoring.saliency import SmoothGradParams, mass_inside, smoothgrad
from marco_svc.synth.render import render_drop
from tests.conftest import needs_shared

pytestmark = pytest.mark.slow

REAL_PLATE = Path(__file__).resolve().parents[2] / "shared/data/formulatrix_90j8"
# One crystal each, drawn at the imager's full frame; the seeds are the first ones tried.
ONE_CRYSTAL_DROPS = [("large crystals", 101), ("medium crystals", 102), ("large crystals", 103)]
DILATE = 0.5  # the box grows by half its size on every side (at least 6 input pixels)


@pytest.fixture(scope="module")
def default() -> model_store.StoredModel:
    model = model_store.default_shipped()
    assert model is not None, "models/DEFAULT names no shipped model"
    return model


def test_the_default_model_ships_verified_small_and_described(
    default: model_store.StoredModel,
) -> None:
    card = default.card
    card.verify(default.folder)
    assert card.architecture == "compact-two-head" and set(card.heads) == {"marco4", "merck10"}
    int8 = default.folder / card.artifacts["tflite-int8"].file
    assert int8.stat().st_size <= 5 * 1024 * 1024
    assert min(card.exports["tflite-int8"]["top1_agreement"].values()) >= 0.99
    assert card.provenance["synthetic_training_data"] is True
    assert card.metrics["evaluation"]["held_out_synthetic"]["examples"] > 500
    assert "fpr_0.016" in card.operating_points


def _dilated(box: tuple[float, ...], size: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    grow_x, grow_y = max((x1 - x0) * DILATE, 6), max((y1 - y0) * DILATE, 6)
    return (
        max(int(x0 - grow_x), 0),
        max(int(y0 - grow_y), 0),
        min(int(np.ceil(x1 + grow_x)), size),
        min(int(np.ceil(y1 + grow_y)), size),
    )


@pytest.mark.parametrize(("label", "seed"), ONE_CRYSTAL_DROPS)
def test_a_one_crystal_drop_is_a_hit_and_its_heatmap_sits_on_the_crystal(
    runtime: Runtime, default: model_store.StoredModel, tmp_path: Path, label: str, seed: int
) -> None:
    drop = render_drop(label, seed, crystals=1)
    assert drop.jpeg is not None and len(drop.crystal_boxes) == 1
    path = tmp_path / "drop.jpg"
    path.write_bytes(drop.jpeg)
    record = ImageRecord(path, "ONEX1", "C3", 1, datetime(2026, 1, 2), "synthetic")
    assert ingest(runtime.db, record).outcome == "created"

    engine = ScoringEngine(runtime, default)
    assert engine.run_pending() == 1
    with runtime.db.session() as session:
        score = session.scalars(select(Score)).one()
        assert score.hit, f"no hit: {score.probabilities} under {score.rule}"

    prep = from_spec(default.card.preprocessing)
    height, width = drop.image.shape[:2]
    box = _dilated(prep.input_box(drop.crystal_boxes[0], height, width), prep.size)
    x = prep.np_from_bytes(drop.jpeg)
    crystals = default.card.heads[MARCO4].index(CRYSTALS)
    heatmap = smoothgrad(keras_model(default), x, MARCO4, crystals, SmoothGradParams(n=50))
    share = mass_inside(heatmap, box)
    assert share >= 0.5, f"only {share:.0%} of the heatmap inside the crystal's box {box}"


@needs_shared(REAL_PLATE)
@pytest.mark.shared
def test_on_the_real_clear_plate_it_calls_few_crystals_as_its_card_says(
    default: model_store.StoredModel,
) -> None:
    from marco_svc.train.plate_check import top_label_shares

    files = sorted(REAL_PLATE.rglob("*.jpg"))
    assert len(files) == 96
    measured = top_label_shares(default, files, "tflite-int8")[MARCO4]
    recorded = default.card.metrics["unlabelled_plates"][REAL_PLATE.name]["tflite-int8"]
    assert measured == pytest.approx(recorded[MARCO4])
    assert measured[CRYSTALS] <= 0.05
