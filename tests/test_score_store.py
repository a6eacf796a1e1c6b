"""Pending images, saving scores idempotently, and re-deciding hits without rescoring."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select

from imager_adapters.record import ImageRecord
from marco_svc.db.models import Image, ModelVersion, Score
from marco_svc.ingest import ingest
from marco_svc.labels import MARCO4_LABELS
from marco_svc.runtime import Runtime
from marco_svc.scoring.lab_rules import LabRules
from marco_svc.scoring.store import ScoreResult, pending_images, redecide, save_scores
from tests.helpers import write_jpeg

PROBS = [
    dict(zip(MARCO4_LABELS, p, strict=True))
    for p in ([0.7, 0.2, 0.05, 0.05], [0.3, 0.6, 0.05, 0.05], [0.5, 0.35, 0.1, 0.05])
]


def model_version(runtime: Runtime, name: str, active: bool = True) -> ModelVersion:
    with runtime.db.session() as session:
        model = ModelVersion(
            name=name,
            version="1",
            architecture="test",
            scheme="marco4",
            labels=list(MARCO4_LABELS),
            card={"operating_points": {"fpr_0.016": {"threshold": 0.3}}},
            active=active,
        )
        session.add(model)
    return model


def ingest_three(runtime: Runtime, tmp_path: Path) -> list[int]:
    ids = []
    for i, barcode in enumerate(["HWI-1", "HWI-1", "C3-2"]):
        record = ImageRecord(
            path=write_jpeg(tmp_path / f"{i}.jpg", seed=i),
            barcode=barcode,
            well=f"A{i + 1}",
            drop=1,
            inspected_at=datetime(2024, 1, 1),
        )
        ids.append(ingest(runtime.db, record).image_id)
    return ids


def results(ids: list[int]) -> list[ScoreResult]:
    return [
        ScoreResult(i, probs, max(probs, key=probs.get), {"flags": []}, 5.0)
        for i, probs in zip(ids, PROBS[: len(ids)], strict=True)
    ]


def test_scores_are_saved_once_and_pending_shrinks(runtime: Runtime, tmp_path: Path) -> None:
    ids = ingest_three(runtime, tmp_path)
    model = model_version(runtime, "m")
    rules = LabRules.parse("threshold:0.5")
    with runtime.db.session() as session:
        assert [p.image_id for p in pending_images(session, model.id, 10)] == ids
    barcodes = {i: "x" for i in ids}
    assert save_scores(runtime.db, model, results(ids[:2]), rules, barcodes) == 2
    save_scores(runtime.db, model, results(ids[:2]), rules, barcodes)  # again: no new rows
    with runtime.db.session() as session:
        assert [p.image_id for p in pending_images(session, model.id, 10)] == ids[2:]
        assert session.scalar(select(func.count(Score.id))) == 2
        statuses = session.scalars(select(Image.status).order_by(Image.id)).all()
        hits = session.scalars(select(Score.hit).order_by(Score.image_id)).all()
    assert statuses == ["scored", "scored", "new"]
    assert hits == [False, True]


def test_a_new_model_version_rescored_leaves_old_scores(runtime: Runtime, tmp_path: Path) -> None:
    ids = ingest_three(runtime, tmp_path)
    old = model_version(runtime, "old")
    rules = LabRules.parse("threshold:0.5")
    save_scores(runtime.db, old, results(ids), rules, {})
    new = model_version(runtime, "new")
    with runtime.db.session() as session:
        assert [p.image_id for p in pending_images(session, new.id, 10)] == ids


def test_changing_a_lab_rule_changes_only_the_decision(runtime: Runtime, tmp_path: Path) -> None:
    ids = ingest_three(runtime, tmp_path)
    model = model_version(runtime, "m")
    barcodes = dict(zip(ids, ["HWI-1", "HWI-1", "C3-2"], strict=True))
    save_scores(runtime.db, model, results(ids), LabRules.parse("threshold:0.5"), barcodes)

    def snapshot():
        with runtime.db.session() as session:
            return [
                (s.id, s.probabilities, s.created_at, s.hit, s.rule)
                for s in session.scalars(select(Score).order_by(Score.id))
            ]

    before = snapshot()
    assert [row[3] for row in before] == [False, True, False]
    counts = redecide(runtime.db, LabRules.parse("threshold:0.5", "C3=threshold:op=fpr_0.016"))
    after = snapshot()
    assert counts == {"scores": 3, "changed": 1}
    assert [row[3] for row in after] == [False, True, True]
    assert after[2][4]["threshold"] == 0.3 and after[2][4]["operating_point"] == "fpr_0.016"
    assert [row[:3] for row in after] == [row[:3] for row in before]
