"""Robot upload, POST /api/v1/inspections: real multipart requests through the Flask app."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from marco_svc import tokens
from marco_svc.api import create_app
from marco_svc.config import Settings
from marco_svc.db.models import Image, Inspection, Plate, Upload
from marco_svc.runtime import Runtime, open_runtime
from marco_svc.service import Service
from tests.helpers import jpeg_bytes

TOKEN = "robot-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
URL = "/api/v1/inspections"
GOOD_A, GOOD_B = jpeg_bytes(seed=1), jpeg_bytes(seed=2)
TRUNCATED = jpeg_bytes(seed=3)[:-300]


def open_app(settings: Settings, **changes: Any) -> tuple[Runtime, FlaskClient]:
    runtime = open_runtime(dataclasses.replace(settings, **{"api_tokens": [TOKEN], **changes}))
    return runtime, create_app(Service(runtime)).test_client()


@pytest.fixture
def app(settings: Settings) -> Iterator[tuple[Runtime, FlaskClient]]:
    runtime, client = open_app(settings)
    yield runtime, client
    runtime.close()


def metadata(**change: Any) -> dict[str, Any]:
    return {
        "barcode": "R1",
        "plate_type": "96x2",
        "imaged_at": "2024-05-01T11:30:00+02:00",
        "imager": "robot-1",
        "inspection_id": "insp-7",
        "images": [
            {"file": "a1", "well": "A1", "drop": 1},
            {"file": "b.jpg", "well": "B2", "drop": 2, "imaging_mode": "visible"},
            {"file": "c.jpg", "well": "C3"},
        ],
        **change,
    }


def form(meta: Any, files: list[tuple[str, bytes, str]]) -> dict[str, Any]:
    """multipart fields: metadata as text, files as (field, content, filename)."""
    data: dict[str, Any] = {"metadata": meta if isinstance(meta, str) else json.dumps(meta)}
    for field, content, filename in files:
        data.setdefault(field, []).append((io.BytesIO(content), filename))
    return data


THREE = [("a1", GOOD_A, "img-a.jpg"), ("images", GOOD_B, "b.jpg"), ("images", TRUNCATED, "c.jpg")]


def post(client: FlaskClient, data: dict[str, Any], headers: dict[str, str] | None = None):
    return client.post(URL, data=data, headers={**AUTH, **(headers or {})})


def count(runtime: Runtime, model: Any) -> int:
    with runtime.db.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_an_upload_lands_like_a_watched_file(app: tuple[Runtime, FlaskClient]) -> None:
    runtime, client = app
    answer = post(client, form(metadata(), THREE))
    assert answer.status_code == 201, answer.get_json()
    body = answer.get_json()
    assert body["counts"] == {"created": 2, "duplicate": 0, "failed": 1}
    assert (body["barcode"], body["plate_type"], body["inspection_id"]) == ("R1", "96x2", "insp-7")
    by_file = {item["file"]: item for item in body["images"]}
    assert by_file["a1"]["filename"] == "img-a.jpg" and by_file["a1"]["outcome"] == "created"
    assert by_file["c.jpg"]["outcome"] == "failed"
    assert by_file["c.jpg"]["reason"].startswith("truncated JPEG")
    with runtime.db.session() as session:
        plate = session.scalar(select(Plate))
        inspection = session.scalar(select(Inspection))
        images = {image.id: image for image in session.scalars(select(Image))}
    assert (plate.barcode, plate.plate_type, plate.wells_inferred) == ("R1", "96x2", False)
    assert inspection.imaged_at == datetime(2024, 5, 1, 9, 30)  # stored as UTC
    assert (inspection.imager, inspection.external_id) == ("robot-1", "insp-7")
    uploads = runtime.settings.resolved_data_dir / "uploads"
    for item in body["images"]:
        stored = Path(images[item["image_id"]].uri)
        assert stored.parent.parent == uploads.resolve()
        assert stored.name.startswith(item["sha256"])
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == item["sha256"]
    assert sorted(runtime.scoring_queue.get(timeout=0)) == sorted(
        by_file[f]["image_id"] for f in ("a1", "b.jpg")
    )


def test_a_retried_upload_is_a_no_op(app: tuple[Runtime, FlaskClient]) -> None:
    runtime, client = app
    key = {"Idempotency-Key": "robot-1/insp-7"}
    first = post(client, form(metadata(), THREE), key)
    reordered = json.dumps(dict(reversed(list(metadata().items()))))
    again = post(client, form(reordered, THREE), key)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (count(runtime, Image), count(runtime, Upload)) == (3, 1)

    changed = post(client, form(metadata(imager="robot-2"), THREE), key)
    assert changed.status_code == 422 and changed.mimetype == "application/problem+json"
    assert "was used for a different request" in changed.get_json()["detail"]

    without_key = post(client, form(metadata(), THREE))
    assert without_key.status_code == 200
    # the truncated file is retried (and fails again); the good ones are duplicates
    assert without_key.get_json()["counts"] == {"created": 0, "duplicate": 2, "failed": 1}
    assert count(runtime, Image) == 3


def test_idempotency_keys_are_scoped_per_token(app: tuple[Runtime, FlaskClient]) -> None:
    runtime, client = app
    _, other = tokens.create(runtime.db, "robot", "robot-2")
    key = {"Idempotency-Key": "shared-key"}
    first = post(client, form(metadata(), THREE), key)
    # another robot using the same key for another request: its own, not a 422 or a replay
    theirs = post(
        client,
        form(metadata(imager="robot-2"), THREE),
        {**key, "Authorization": f"Bearer {other}"},
    )
    assert (first.status_code, theirs.status_code) == (201, 201)  # its own inspection
    assert "Idempotent-Replayed" not in theirs.headers
    assert theirs.get_json()["imager"] == "robot-2"
    assert count(runtime, Upload) == 2


def test_metadata_may_come_as_a_file_part(app: tuple[Runtime, FlaskClient]) -> None:
    _, client = app
    meta = metadata(images=[{"file": "x.jpg", "well": "H12", "drop": 2}])
    data = {
        "metadata": (io.BytesIO(json.dumps(meta).encode()), "metadata.json"),
        "image": (io.BytesIO(GOOD_A), "x.jpg"),
    }
    answer = post(client, data)
    assert answer.status_code == 201
    assert answer.get_json()["images"][0]["well"] == "H12"


def test_writes_need_a_robot_token(settings: Settings) -> None:
    runtime, client = open_app(settings, api_tokens=[])
    try:
        refused = post(client, form(metadata(), THREE))
        assert refused.status_code == 401 and refused.get_json()["title"] == "Invalid token"
        _, lims = tokens.create(runtime.db, "lims")
        forbidden = post(client, form(metadata(), THREE), {"Authorization": f"Bearer {lims}"})
        assert forbidden.status_code == 403 and "robot" in forbidden.get_json()["detail"]
        assert count(runtime, Image) == 0
    finally:
        runtime.close()
    runtime, client = open_app(settings)
    try:
        missing = client.post(URL, data=form(metadata(), THREE))
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = post(client, form(metadata(), THREE), {"Authorization": "Bearer x"})
        assert wrong.status_code == 401 and wrong.get_json()["title"] == "Invalid token"
        assert count(runtime, Image) == 0
    finally:
        runtime.close()


@pytest.mark.parametrize(
    ("limits", "fragment"),
    [
        ({"upload_max_bytes": 2000}, "setting upload_max_bytes"),
        ({"upload_max_images": 2}, "3 images; the limit is 2 (setting upload_max_images)"),
    ],
)
def test_limits_are_413(settings: Settings, limits: dict[str, int], fragment: str) -> None:
    runtime, client = open_app(settings, **limits)
    try:
        answer = post(client, form(metadata(), THREE))
        assert answer.status_code == 413 and answer.mimetype == "application/problem+json"
        assert fragment in answer.get_json()["detail"]
        assert count(runtime, Image) == 0
    finally:
        runtime.close()


def test_many_parts_beyond_the_image_limit_are_413(settings: Settings) -> None:
    runtime, client = open_app(settings, upload_max_images=3)
    try:
        files = [(f"f{n}", GOOD_A, f"{n}.jpg") for n in range(40)]
        answer = post(client, form(metadata(), files))
        assert answer.status_code == 413
        assert "upload_max_images" in answer.get_json()["detail"]
    finally:
        runtime.close()


@pytest.mark.parametrize(
    ("meta", "files", "fragment"),
    [
        (None, THREE, "no part 'metadata'"),
        ("{not json", THREE, "metadata is not JSON"),
        (metadata(imaged_at="soon"), THREE, "imaged_at: 'soon' is not an ISO 8601 time"),
        (
            metadata(images=[{"file": "a1", "well": "A13"}]),
            THREE[:1],
            "images[0]: well A13 is not on a 96-well plate",
        ),
        (metadata(), THREE[:2], "images[2].file 'c.jpg': no file in the request"),
        (metadata(), [*THREE, ("extra", GOOD_A, "d.jpg")], "part 'extra' (file 'd.jpg')"),
        (
            metadata(images=[{"file": "images", "well": "A1"}]),
            THREE[1:],
            "images[0].file 'images': several parts",
        ),
    ],
)
def test_bad_requests_are_422(
    app: tuple[Runtime, FlaskClient], meta: Any, files: list, fragment: str
) -> None:
    runtime, client = app
    data = form(meta or {}, files)
    if meta is None:
        del data["metadata"]
    answer = post(client, data)
    assert answer.status_code == 422, answer.get_json()
    assert answer.mimetype == "application/problem+json"
    assert fragment in answer.get_json()["detail"]
    assert count(runtime, Image) == 0
