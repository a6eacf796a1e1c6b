"""Edge agents, on both databases: POST /api/v1/edge/results stores each result as an ordinary
score exactly once (re-sends are duplicates and the feed does not move), and GET
/api/v1/edge/model(/file) hands out the TFLite model that scores now."""

from __future__ import annotations

import copy
import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from imager_adapters.record import ImageRecord
from marco_svc import registry
from marco_svc.db.models import Image, ImageStatus, ModelVersion, Score, Upload
from marco_svc.ingest import ingest
from marco_svc.nets.card import ModelCard
from marco_svc.runtime import Runtime
from marco_svc.scoring.lab_rules import LabRules
from marco_svc.scoring.store import ScoreResult, pending_images, save_scores
from marco_svc.service import Service
from tests.helpers import api_client, write_jpeg
from tests.nets_helpers import write_fake_model_folder

URL = "/api/v1/edge/results"
CRYSTAL = {"Clear": 0.1, "Crystals": 0.8, "Other": 0.05, "Precipitate": 0.05}
CLEAR = {"Clear": 0.85, "Crystals": 0.05, "Other": 0.05, "Precipitate": 0.05}
TFLITE_BYTES = b"TFL3 not really a model, for tests"


def register_model(
    runtime: Runtime, tmp_path: Path, version: str = "1", tflite: str | None = "tflite-int8"
) -> dict[str, Any]:
    """A fake marco4 model (keras placeholder, optionally a TFLite file), registered, active."""
    folder = write_fake_model_folder(
        tmp_path / f"src-{version}", name="edgy", version=version, arch="marco-inception-v3"
    )
    if tflite is not None:
        (folder / "model.tflite").write_bytes(TFLITE_BYTES + version.encode())
        card = ModelCard.load(folder)
        card.add_artifact(tflite, folder, "model.tflite")
        card.save(folder)
    stored = registry.register(runtime.settings, folder, db=runtime.db)
    registry.activate(runtime.db, stored.ref)
    artifacts = stored.card.artifacts
    return {
        "ref": stored.ref,
        "sha": artifacts[tflite].sha256 if tflite else artifacts["keras"].sha256,
        "card": stored.card,
    }


def result(registered: dict[str, Any], n: int, **change: Any) -> dict[str, Any]:
    """One result as the agent sends it; `n` makes its key, well and image content."""
    probabilities = CRYSTAL if n == 0 else CLEAR
    item = {
        "key": f"edge-{n}",
        "barcode": "EDGE-1",
        "well": f"A{n + 1}",
        "drop": 1,
        "imaged_at": "2024-06-01T10:00:00+02:00",
        "imager": "RI1000-0081",
        "imaging_mode": "visible",
        "plate_type": "96x2",
        "path": f"D:\\Images\\EDGE-1\\A{n + 1}_1.jpg",
        "sha256": hashlib.sha256(f"image {n}".encode()).hexdigest(),
        "size_bytes": 12345 + n,
        "width": 1280,
        "height": 960,
        "model": {
            "name": "edgy",
            "version": registered["ref"].split(":")[1],
            "sha256": registered["sha"],
        },
        "probabilities": dict(probabilities),
        "top_class": max(probabilities, key=probabilities.get),
        "latency_ms": 41.5 + n,
        "quality": {"blur": 0.1 * n},
    }
    item.update(change)
    return item


def post(client: Any, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    answer = client.post(URL, json={"results": items})
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["results"]


def counts(runtime: Runtime) -> tuple[int, int, list[int]]:
    with runtime.db.session() as session:
        images = session.scalar(select(func.count()).select_from(Image))
        scores = session.scalar(select(func.count()).select_from(Score))
        seqs = list(session.scalars(select(Score.feed_seq).order_by(Score.id)))
    return images, scores, seqs


def test_a_result_is_an_ordinary_score(runtime: Runtime, tmp_path: Path) -> None:
    model = register_model(runtime, tmp_path)
    service = Service(runtime)
    robot, lims = api_client(service, "robot"), api_client(service, "lims")
    answer = post(robot, [result(model, 0), result(model, 1)])
    assert [(r["key"], r["outcome"], r["reason"]) for r in answer] == [
        ("edge-0", "stored", None),
        ("edge-1", "stored", None),
    ]
    hit_id = answer[0]["image_id"]
    with runtime.db.session() as session:
        image = session.get(Image, hit_id)
        assert image.uri == "edge://RI1000-0081/D:\\Images\\EDGE-1\\A1_1.jpg"
        assert (image.status, image.adapter, image.width, image.height, image.size_bytes) == (
            ImageStatus.SCORED,
            "edge",
            1280,
            960,
            12345,
        )
        assert image.sha256 == result(model, 0)["sha256"]
        score = session.scalar(select(Score).where(Score.image_id == hit_id))
        assert (score.source, score.hit, score.top_class, score.latency_ms) == (
            "edge",
            True,
            "Crystals",
            41.5,
        )
        assert score.quality == {"blur": 0.0} and score.probabilities == CRYSTAL
    # a server-side score of another image, for the shape
    served = runtime.settings.resolved_data_dir / "seed"
    local = ingest(
        runtime.db,
        ImageRecord(
            path=write_jpeg(served / "B1.jpg", seed=3),
            barcode="EDGE-1",
            well="B1",
            drop=1,
            inspected_at=datetime(2024, 6, 1, 8),
            imager="RI1000-0081",
        ),
    )
    with runtime.db.session() as session:
        version = session.scalar(select(ModelVersion).where(ModelVersion.name == "edgy"))
    rules = LabRules.parse(runtime.settings.crystal_rule, runtime.settings.lab_rules)
    save_scores(
        runtime.db, version, [ScoreResult(local.image_id, CRYSTAL, "Crystals", {}, 3.0)], rules, {}
    )

    hits = lims.get("/api/v1/hits?since=0").get_json()["hits"]
    assert [h["id"] for h in hits] == [hit_id, local.image_id]
    scores = lims.get("/api/v1/scores?since=0").get_json()["scores"]
    assert [s["id"] for s in scores] == [hit_id, answer[1]["image_id"], local.image_id]
    edge, server = scores[0], scores[2]
    assert set(edge) == set(server) and set(edge["score"]) == set(server["score"])
    assert (edge["score"]["source"], server["score"]["source"]) == ("edge", "server")
    assert edge["score"]["rule"] == server["score"]["rule"]
    assert (edge["barcode"], edge["well"], edge["drop"], edge["status"]) == (
        "EDGE-1",
        "A1",
        1,
        "scored",
    )
    assert edge["inspection"]["imaged_at"].startswith("2024-06-01T08:00:00")


def test_a_resend_is_a_duplicate_and_the_feed_does_not_move(
    runtime: Runtime, tmp_path: Path
) -> None:
    model = register_model(runtime, tmp_path)
    service = Service(runtime)
    robot, lims = api_client(service, "robot"), api_client(service, "lims")
    batch = [result(model, n) for n in range(3)]
    first = post(robot, batch)
    assert [r["outcome"] for r in first] == ["stored"] * 3
    before = counts(runtime)
    cursor = lims.get("/api/v1/scores?since=0").get_json()["next"]

    again = post(robot, batch)
    assert [(r["outcome"], r["image_id"], r["reason"]) for r in again] == [
        ("duplicate", r["image_id"], None) for r in first
    ]
    # a new key for an image this model already scored: no second score, no new place
    renamed = post(robot, [dict(batch[0], key="a-new-key")])
    assert [(r["outcome"], r["image_id"]) for r in renamed] == [("duplicate", first[0]["image_id"])]
    assert counts(runtime) == before
    assert lims.get(f"/api/v1/scores?since={cursor}").get_json()["scores"] == []
    with runtime.db.session() as session:
        kept = session.scalars(select(Upload).where(Upload.kind == "edge-result")).all()
    assert sorted(u.idempotency_key for u in kept) == ["a-new-key", "edge-0", "edge-1", "edge-2"]


def test_failures_are_per_result(runtime: Runtime, tmp_path: Path) -> None:
    model = register_model(runtime, tmp_path)
    robot = api_client(Service(runtime), "robot")
    post(robot, [result(model, 0)])
    changed = result(model, 0, latency_ms=99.0)  # same key, other content
    unknown_sha = result(model, 1, model={**result(model, 1)["model"], "sha256": "ab" * 32})
    unknown_version = result(model, 2, model={**result(model, 2)["model"], "version": "9"})
    bad_barcode = result(model, 3, barcode="<script>")
    wrong_labels = result(model, 4, probabilities={"crystal": 1.0}, top_class="crystal")
    wrong_top = result(model, 5, top_class="Crystals")
    bad_imager = result(model, 6, imager="rig\x00")
    good = result(model, 7)
    answer = post(
        robot,
        [
            changed,
            unknown_sha,
            unknown_version,
            bad_barcode,
            wrong_labels,
            wrong_top,
            bad_imager,
            good,
        ],
    )
    outcomes = {r["key"]: r for r in answer}
    assert [r["outcome"] for r in answer] == ["failed"] * 7 + ["stored"]
    assert "used for a different request" in outcomes["edge-0"]["reason"]
    assert outcomes["edge-1"]["reason"].startswith("unknown model or model file")
    assert outcomes["edge-2"]["reason"].startswith("unknown model or model file")
    assert outcomes["edge-3"]["reason"].startswith("invalid metadata: barcode")
    assert outcomes["edge-3"]["image_id"] is not None  # ingest records the failed image
    assert outcomes["edge-4"]["reason"].startswith("probabilities")
    assert outcomes["edge-5"]["reason"].startswith("top_class")
    assert outcomes["edge-6"]["reason"].startswith("invalid metadata: imager")
    assert outcomes["edge-6"]["image_id"] is None
    with runtime.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Score)) == 2
        failed = session.get(Image, outcomes["edge-3"]["image_id"])
        assert failed.status == ImageStatus.FAILED and "barcode" in failed.error
    # a failed result is not remembered: fixed, the same key goes through
    fixed = post(robot, [result(model, 3)])
    assert [(r["key"], r["outcome"]) for r in fixed] == [("edge-3", "stored")]


def test_model_endpoints(runtime: Runtime, tmp_path: Path) -> None:
    model = register_model(runtime, tmp_path)
    service = Service(runtime)
    robot, lims = api_client(service, "robot"), api_client(service, "lims")
    answer = robot.get("/api/v1/edge/model")
    assert answer.status_code == 200
    body = answer.get_json()
    assert {k: body[k] for k in ("ref", "name", "version", "format", "sha256", "size")} == {
        "ref": "edgy:1",
        "name": "edgy",
        "version": "1",
        "format": "tflite-int8",
        "sha256": model["sha"],
        "size": len(TFLITE_BYTES) + 1,
    }
    assert body["card"]["artifacts"]["tflite-int8"]["sha256"] == model["sha"]
    assert body["card"]["heads"] == {"marco4": ["Clear", "Crystals", "Other", "Precipitate"]}

    with robot.get("/api/v1/edge/model/file") as file:
        assert file.status_code == 200 and file.mimetype == "application/octet-stream"
        data = file.data
        assert file.headers["ETag"] == f'"{model["sha"]}"'
    assert hashlib.sha256(data).hexdigest() == model["sha"]
    etag = {"If-None-Match": f'"{model["sha"]}"'}
    with robot.get("/api/v1/edge/model/file", headers=etag) as same:
        assert same.status_code == 304 and same.data == b""
    with robot.get("/api/v1/edge/model/file", headers={"If-None-Match": '"0000"'}) as other:
        assert other.status_code == 200 and other.data == data

    for url in ("/api/v1/edge/model", "/api/v1/edge/model/file"):
        assert lims.get(url).status_code == 403
    assert lims.post(URL, json={"results": [result(model, 0)]}).status_code == 403

    fp32 = register_model(runtime, tmp_path, version="2", tflite="tflite-fp32")
    body = robot.get("/api/v1/edge/model").get_json()
    assert (body["ref"], body["format"], body["sha256"]) == ("edgy:2", "tflite-fp32", fp32["sha"])
    register_model(runtime, tmp_path, version="3", tflite=None)
    for url in ("/api/v1/edge/model", "/api/v1/edge/model/file"):
        missing = robot.get(url)
        assert missing.status_code == 404 and missing.mimetype == "application/problem+json"
        assert "edgy:3" in missing.get_json()["detail"]


def test_edge_images_are_never_pending_on_the_server(runtime: Runtime, tmp_path: Path) -> None:
    model = register_model(runtime, tmp_path)
    robot = api_client(Service(runtime), "robot")
    post(robot, [result(model, 0)])
    newer = register_model(runtime, tmp_path, version="2")  # the server now scores with v2
    with runtime.db.session() as session:
        ids = {
            v.version: v.id for v in session.scalars(select(ModelVersion)).all()
        }  # both versions
        assert pending_images(session, ids["2"], 10) == []
        assert pending_images(session, ids["1"], 10) == []
    assert newer["ref"] == "edgy:2"


def test_invalid_bodies_are_refused_whole(runtime: Runtime, tmp_path: Path) -> None:
    model = register_model(runtime, tmp_path)
    robot = api_client(Service(runtime), "robot")
    good = result(model, 0)
    broken: list[Any] = [
        {"results": []},
        {"results": [good] * 501},
        {"results": [dict(good, sha256="xyz")]},
        {"results": [dict(good, key="")]},
        {"results": [dict(good, key="tab\tkey")]},
        {"results": [dict(good, probabilities={"Clear": 2.0})]},
        {"results": [{k: v for k, v in good.items() if k != "model"}]},
    ]
    for body in broken:
        answer = robot.post(URL, json=copy.deepcopy(body))
        assert answer.status_code == 422, (body, answer.get_json())
        assert answer.mimetype == "application/problem+json"
    assert counts(runtime)[:2] == (0, 0)
    # fields it does not know are ignored (a newer agent), and quality defaults to {}
    extra = {k: v for k, v in good.items() if k != "quality"} | {"future": 1}
    assert [r["outcome"] for r in post(robot, [extra])] == ["stored"]
