"""The REST API's resources on both databases: plates, inspections, drops, auto-scores in
SynchWeb's shape, plate CSV, models, schemes, human scores, feeds and metrics."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from imager_adapters.record import ImageRecord
from marco_svc import registry
from marco_svc.db.models import HumanScore, ModelVersion
from marco_svc.ingest import ingest
from marco_svc.runtime import Runtime
from marco_svc.scoring.lab_rules import LabRules
from marco_svc.scoring.store import ScoreResult, save_scores
from marco_svc.service import Service
from tests.helpers import api_client, write_jpeg
from tests.nets_helpers import write_fake_model_folder

BARCODE = "HWI-7"
DAYS = (datetime(2024, 5, 1, 9), datetime(2024, 5, 8, 9))
WELLS = ("A1", "A2", "B1")
# Keys deliberately not in MARCO's output order: mapping must go by name.
CRYSTAL = {"Precipitate": 0.05, "Crystals": 0.8, "Other": 0.05, "Clear": 0.1}
CLEAR = {"Other": 0.05, "Clear": 0.85, "Precipitate": 0.05, "Crystals": 0.05}


def seed_scored_plate(runtime: Runtime, tmp_path: Path) -> dict[str, Any]:
    """A 96x1 plate imaged twice (3 drops each), scored by an active model: on the second
    day B1 is a hit; and one failed file."""
    folder = write_fake_model_folder(
        tmp_path / "model-src", name="seeded", version="1", arch="marco-inception-v3"
    )
    stored = registry.register(runtime.settings, folder, db=runtime.db)
    registry.activate(runtime.db, stored.ref)
    with runtime.db.session() as session:
        model = session.scalar(select(ModelVersion).where(ModelVersion.name == "seeded"))
    ids: dict[tuple[int, str], int] = {}
    served = runtime.settings.resolved_data_dir / "seed"  # data_dir is a served folder
    for day, at in enumerate(DAYS):
        results = []
        for n, well in enumerate(WELLS):
            record = ImageRecord(
                path=write_jpeg(served / f"d{day}" / f"{well}.jpg", seed=10 * day + n),
                barcode=BARCODE,
                well=well,
                drop=1,
                inspected_at=at,
            )
            image_id = ingest(runtime.db, record).image_id
            ids[(day, well)] = image_id
            probs = CRYSTAL if (day, well) == (1, "B1") else CLEAR
            results.append(ScoreResult(image_id, probs, max(probs, key=probs.get), {}, 4.0))
        save_scores(runtime.db, model, results, LabRules.parse("threshold:0.5"), {})
    bad = tmp_path / "bad" / "x.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"no image")
    failed = ingest(
        runtime.db,
        ImageRecord(path=bad, barcode=BARCODE, well="C1", drop=1, inspected_at=DAYS[1]),
    )
    return {"ids": ids, "model_id": model.id, "failed": failed.image_id}


def test_plates_inspections_drops_and_etags(runtime: Runtime, tmp_path: Path) -> None:
    seed_scored_plate(runtime, tmp_path)
    client = api_client(Service(runtime), "lims")
    page = client.get("/api/v1/plates?barcode=WI-").get_json()
    assert [p["barcode"] for p in page["plates"]] == [BARCODE] and page["next"] is None
    assert client.get("/api/v1/plates?barcode=%25").get_json()["plates"] == []
    answer = client.get(f"/api/v1/plates/{BARCODE}")
    plate = answer.get_json()
    assert plate["inspection_count"] == 2
    assert plate["images"] == {"new": 0, "scored": 6, "failed": 1}
    assert plate["newest_inspection"]["hits"] == 1
    assert plate["newest_inspection"]["top_classes"] == {"Clear": 2, "Crystals": 1}
    again = client.get(
        f"/api/v1/plates/{BARCODE}", headers={"If-None-Match": answer.headers["ETag"]}
    )
    assert again.status_code == 304
    course = client.get(f"/api/v1/plates/{BARCODE}/inspections").get_json()["inspections"]
    assert [i["days_since_first"] for i in course] == [0.0, 7.0]
    assert [i["image_count"] for i in course] == [3, 4]
    first = client.get(f"/api/v1/inspections/{course[1]['id']}/drops?limit=2").get_json()
    rest = client.get(
        f"/api/v1/inspections/{course[1]['id']}/drops?limit=2&cursor={first['next']}"
    ).get_json()
    wells = [d["well"] for d in first["drops"] + rest["drops"]]
    assert wells == ["A1", "A2", "B1", "C1"] and rest["next"] is None
    b1 = (first["drops"] + rest["drops"])[2]
    assert b1["score"]["hit"] is True and b1["score"]["top_class"] == "Crystals"


def test_autoscores_and_csv_map_classes_by_name(runtime: Runtime, tmp_path: Path) -> None:
    seeded = seed_scored_plate(runtime, tmp_path)
    client = api_client(Service(runtime), "lims")
    course = client.get(f"/api/v1/plates/{BARCODE}/inspections").get_json()["inspections"]
    autos = client.get(f"/api/v1/inspections/{course[1]['id']}/autoscores").get_json()
    by_id = {row["BLSAMPLEIMAGEID"]: row["CLASSES"] for row in autos}
    hit = by_id[seeded["ids"][(1, "B1")]]
    assert hit == {"clear": 0.1, "crystal": 0.8, "precipitant": 0.05, "other": 0.05}
    assert all("IMAGEFULLPATH" not in row for row in autos), "paths are for admins"
    text = client.get(f"/api/v1/plates/{BARCODE}/scores.csv").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 7
    b1 = next(r for r in rows if r["well"] == "B1" and r["imaged_at"].startswith("2024-05-08"))
    assert (b1["top_class"], b1["hit"], b1["p_Crystals"]) == ("Crystals", "1", "0.800000")
    assert next(r for r in rows if r["well"] == "C1")["status"] == "failed"


def test_human_scores_put_patch_and_feed(runtime: Runtime, tmp_path: Path) -> None:
    seeded = seed_scored_plate(runtime, tmp_path)
    service = Service(runtime)
    ada = api_client(service, "scientist", "ada")
    bob = api_client(service, "scientist", "bob")
    admin = api_client(service, "admin", "root")
    lims = api_client(service, "lims")
    image = seeded["ids"][(1, "A1")]
    url = f"/api/v1/images/{image}/human-score"
    first = ada.put(url, json={"label": "crystals", "scheme": "marco4"})
    assert first.status_code == 201 and first.get_json()["label"] == "Crystals"
    assert ada.put(url, json={"label": "Crystals"}).status_code == 200
    changed = ada.put(url, json={"label": "Precipitate"})
    assert changed.status_code == 200 and changed.get_json()["id"] == first.get_json()["id"]
    assert ada.put(url, json={"label": "Sludge"}).status_code == 422
    assert ada.put(url, json={"label": "clear", "scheme": "merck10"}).status_code == 200
    assert (
        ada.put(
            f"/api/v1/images/{seeded['failed']}/human-score", json={"label": "Clear"}
        ).status_code
        == 422
    )
    assert lims.put(url, json={"label": "Clear"}).status_code == 403
    mine = first.get_json()["id"]
    assert bob.patch(f"/api/v1/human-scores/{mine}", json={"label": "bad drop"}).status_code == 403
    fixed = admin.patch(f"/api/v1/human-scores/{mine}", json={"label": "bad drop"})
    assert fixed.status_code == 200 and fixed.get_json()["label"] == "bad drop"
    assert bob.put(url, json={"label": "Other"}).status_code == 201
    listed = lims.get(f"/api/v1/images/{image}/human-scores").get_json()["human_scores"]
    assert sorted((h["who"], h["label"]) for h in listed) == [("ada", "bad drop"), ("bob", "Other")]
    with runtime.db.session() as session:
        assert len(session.scalars(select(HumanScore)).all()) == 2
    feed = lims.get("/api/v1/human-scores?since=0").get_json()
    assert [h["who"] for h in feed["human_scores"]] == ["ada", "bob"]  # ada's moved on change
    assert lims.get(f"/api/v1/human-scores?since={feed['next']}").get_json()["human_scores"] == []


def test_models_schemes_feeds_and_metrics(runtime: Runtime, tmp_path: Path) -> None:
    seeded = seed_scored_plate(runtime, tmp_path)
    service = Service(runtime)
    lims, admin = api_client(service, "lims"), api_client(service, "admin")
    models = lims.get("/api/v1/models").get_json()["models"]
    assert [(m["ref"], m["active"]) for m in models] == [("seeded:1", True)]
    card = lims.get(f"/api/v1/models/{seeded['model_id']}").get_json()["card"]
    assert card["name"] == "seeded"
    assert lims.post(f"/api/v1/models/{seeded['model_id']}/activate").status_code == 403
    assert admin.post(f"/api/v1/models/{seeded['model_id']}/activate").get_json()["active"]
    schemes = {s["name"]: s for s in lims.get("/api/v1/schemas").get_json()["schemes"]}
    assert schemes["merck10"]["four_way"]["needles & plates"] == "Crystals"
    assert schemes["marco4"]["ispyb"]["Precipitate"] == "precipitant"
    hits = lims.get("/api/v1/hits?since=0").get_json()
    assert [h["id"] for h in hits["hits"]] == [seeded["ids"][(1, "B1")]]
    scores = lims.get("/api/v1/scores?since=0&limit=4").get_json()
    more = lims.get(f"/api/v1/scores?since={scores['next']}").get_json()
    assert len(scores["scores"]) + len(more["scores"]) == 6
    day2 = lims.get("/api/v1/scores?since=0&imaged_after=2024-05-05T00:00:00").get_json()
    assert len(day2["scores"]) == 3
    crystals = lims.get("/api/v1/scores?since=0&class=Crystals").get_json()["scores"]
    assert len(crystals) == 1
    assert lims.get("/api/v1/scores?since=0&plate=NOPE").get_json()["scores"] == []
    text = lims.get("/metrics").get_data(as_text=True)
    assert 'marco_images{status="scored"} 6.0' in text and "marco_scores 6.0" in text
    assert "marco_http_request_seconds_bucket" in text
