"""The one scoring path: `score_batch` checks, preprocesses and predicts a batch of bytes,
and the engine, `marco-svc score` and evaluation all go through it."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from imager_adapters.record import ImageRecord
from marco_svc import registry
from marco_svc.db.models import Image
from marco_svc.ingest import ingest
from marco_svc.labels import MARCO4, MERCK10, labels_of
from marco_svc.nets.card import ModelCard
from marco_svc.nets.runner import load_keras, open_runner
from marco_svc.runtime import Runtime
from marco_svc.scoring.batch import Limits, score_batch
from marco_svc.scoring.engine import ScoringEngine
from tests.helpers import jpeg_bytes, write_jpeg
from tests.nets_helpers import write_model_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelCard, Path]:
    folder = tmp_path_factory.mktemp("two-head")
    return write_model_folder(folder, "resnet-32-two-head", tflite=True), folder


@pytest.mark.parametrize("fmt", ["keras", "tflite-fp32"])
def test_a_batch_scores_the_good_and_names_the_bad(model: tuple[ModelCard, Path], fmt: str) -> None:
    card, folder = model
    runner = open_runner(card, folder, fmt)
    good, big = jpeg_bytes(seed=1), jpeg_bytes(400, 300, seed=2)
    items = [("good", good), ("big", big), ("cut", good[:900] + b"\xff\xd9")]
    seen: list[str] = []

    def extra(key: str, data: bytes) -> int:
        seen.append(key)
        return len(data)

    scored, failed = score_batch(runner, items, Limits(max_pixels=100_000), extra)
    assert [s.key for s in scored] == ["good"] and seen == ["good"]
    assert {f.key: f.reason.split(":")[0] for f in failed} == {
        "big": "image of 400x300 pixels exceeds the limit of 100000 pixels",
        "cut": "corrupt image data",
    }
    good = scored[0]
    assert set(good.heads) == {MARCO4, MERCK10}
    for row in good.heads.values():
        assert row.sum() == pytest.approx(1.0, abs=1e-4)
    assert good.top in {labels_of(s)[int(np.argmax(row))] for s, row in good.heads.items()}
    assert good.seconds > 0 and good.extra == len(items[0][1])


def test_a_failing_extra_fails_only_its_image(model: tuple[ModelCard, Path]) -> None:
    runner = open_runner(*model, "tflite-fp32")

    def extra(key: str, data: bytes) -> None:
        if key == "b":
            raise ValueError("no drop in this image")

    items = [("a", jpeg_bytes(seed=1)), ("b", jpeg_bytes(seed=2))]
    scored, failed = score_batch(runner, items, Limits(), extra)
    assert [s.key for s in scored] == ["a"]
    assert [(f.key, f.reason) for f in failed] == [("b", "no drop in this image")]
    assert score_batch(runner, [], Limits()) == ([], [])


def test_the_engine_applies_max_image_pixels(
    runtime: Runtime, tmp_path: Path, model: tuple[ModelCard, Path]
) -> None:
    path = write_jpeg(tmp_path / "a.jpg", width=400, height=300)
    record = ImageRecord(path, "E1", "A1", 1, datetime(2024, 2, 3), "RI-9")
    image_id = ingest(runtime.db, record).image_id
    runtime.settings = dataclasses.replace(runtime.settings, max_image_pixels=100_000)
    stored = registry.register(runtime.settings, model[1], db=runtime.db)
    ScoringEngine(runtime, stored).run_pending()
    with runtime.db.session() as session:
        image = session.get(Image, image_id)
    assert image.status == "failed" and "exceeds the limit of 100000 pixels" in image.error


def test_runners_and_heatmaps_share_one_loaded_network(model: tuple[ModelCard, Path]) -> None:
    card, folder = model
    runner = open_runner(card, folder, "keras")
    network = load_keras(folder / "model.keras")
    assert load_keras(folder / "model.keras") is network
    assert runner.model.get_layer(MARCO4) is network.get_layer(MARCO4)
    assert np.isfinite(runner.predict(runner.preprocess(jpeg_bytes())[None])[MARCO4]).all()
