"""The scoring engine over real files and a real (small, random-weight) network."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select

from imager_adapters.record import ImageRecord
from marco_svc import registry
from marco_svc.db.models import Image, Score
from marco_svc.ingest import ingest
from marco_svc.labels import MERCK10_LABELS
from marco_svc.runtime import Runtime
from marco_svc.scoring.engine import ScoringEngine
from tests.helpers import write_jpeg
from tests.nets_helpers import write_model_folder


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("models")
    folders = []
    for version in ("1", "2"):
        folder = root / version
        write_model_folder(folder, "resnet-32", "tiny", version, tflite=True, seed=int(version))
        folders.append(folder)
    return folders


def good_png(path: Path) -> Path:
    PILImage.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(path, format="PNG")
    return path


def corrupt_png(path: Path) -> None:
    """Keep the PNG's header (and so its stored size) but break its pixel data."""
    data = path.read_bytes()
    start = data.index(b"IDAT") + 24
    path.write_bytes(data[:start] + b"\0" * 16 + data[start + 16 :])


def ingest_plate(runtime: Runtime, tmp_path: Path) -> list[int]:
    files = [write_jpeg(tmp_path / f"{i}.jpg", seed=i, width=320, height=256) for i in range(5)]
    files.append(good_png(tmp_path / "broken.png"))
    ids = []
    for i, path in enumerate(files):
        record = ImageRecord(path, "HWI-7", f"B{i + 1}", 1, datetime(2024, 2, 3), "RI-9")
        result = ingest(runtime.db, record)
        assert result.outcome == "created", result.reason
        ids.append(result.image_id)
    corrupt_png(files[-1])  # damaged after ingest (ingest itself refuses corrupt data)
    return ids


def register(runtime: Runtime, folder: Path) -> registry.StoredModel:
    return registry.register(runtime.settings, folder, db=runtime.db)


def test_engine_scores_pending_images_and_records_undecodable_ones(
    runtime: Runtime, tmp_path: Path, model_folders: list[Path]
) -> None:
    ids = ingest_plate(runtime, tmp_path)
    engine = ScoringEngine(runtime, register(runtime, model_folders[0]), batch_size=4)
    assert engine.run_pending() == 6
    assert engine.run_pending() == 0, "nothing is left, nothing is scored twice"
    assert registry.active_version(runtime.db) is None, "scoring activates no model"
    with runtime.db.session() as session:
        images = {i.id: i for i in session.scalars(select(Image))}
        scores = {s.image_id: s for s in session.scalars(select(Score))}
    assert [images[i].status for i in ids] == ["scored"] * 5 + ["failed"]
    assert "cannot decode the image" in images[ids[5]].error
    assert set(scores) == set(ids[:5])
    for score in scores.values():
        assert set(score.probabilities) == set(MERCK10_LABELS)
        assert sum(score.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert score.top_class == max(score.probabilities, key=score.probabilities.get)
        assert score.rule == {
            "kind": "threshold",
            "k": 3,
            "threshold": 0.5,
            "operating_point": None,
        }
        assert score.hit == (score.p_crystal >= 0.5)
        assert set(score.quality["checks"]) >= {"too_dark", "out_of_focus", "no_drop"}
        assert score.latency_ms > 0


def test_activating_another_version_rescores_in_the_background(
    runtime: Runtime, tmp_path: Path, model_folders: list[Path]
) -> None:
    ids = ingest_plate(runtime, tmp_path)
    first = ScoringEngine(runtime, register(runtime, model_folders[0]))
    first.run_pending(limit=2)  # interrupted after two images
    assert first.run_pending() == 4  # resumes where it stopped
    second_model = register(runtime, model_folders[1])
    registry.activate(runtime.db, second_model.ref)
    assert not first.is_current()
    second = ScoringEngine(runtime, artifact="tflite-fp32")
    assert second.model.ref == "tiny:2"
    assert second.run_pending() == 5  # the failed image is not retried
    with runtime.db.session() as session:
        assert session.scalar(select(func.count(Score.id))) == 10
    assert len(ids) == 6


def test_lab_rules_apply_per_plate(
    runtime: Runtime, tmp_path: Path, model_folders: list[Path]
) -> None:
    from dataclasses import replace

    runtime.settings = replace(
        runtime.settings, crystal_rule="threshold:1.0", lab_rules="HWI=top_k:10"
    )
    ingest_plate(runtime, tmp_path)
    ScoringEngine(runtime, register(runtime, model_folders[0])).run_pending()
    with runtime.db.session() as session:
        scores = list(session.scalars(select(Score)))
    assert scores and all(s.hit and s.rule == {**s.rule, "kind": "top_k", "k": 10} for s in scores)
