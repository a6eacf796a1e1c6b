"""The access matrix: every endpoint × every role (and no token) gets exactly its answer:
401 without a valid token, 403 for a role that may not, and otherwise the endpoint's own
answer. A new endpoint missing from EXPECTED fails the test."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from marco_svc import tokens
from marco_svc.api import create_app
from marco_svc.runtime import Runtime
from marco_svc.service import Service
from tests.helpers import jpeg_bytes
from tests.test_api_resources import BARCODE, seed_scored_plate

ROLES = ("robot", "lims", "scientist", "admin")
READERS = {"lims", "scientist", "admin"}
LABELLERS = {"scientist", "admin"}
ADMINS = {"admin"}
UPLOADERS = {"robot", "admin"}
PUBLIC = None  # no token needed
# (method, rule) -> roles that may; every rule of the app must be here.
EXPECTED: dict[tuple[str, str], set[str] | None] = {
    ("GET", "/api/v1"): PUBLIC,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/api/v1/openapi.json"): PUBLIC,
    ("GET", "/metrics"): READERS,
    ("GET", "/api/v1/plates"): READERS,
    ("GET", "/api/v1/plates/<barcode:barcode>"): READERS,
    ("GET", "/api/v1/plates/<barcode:barcode>/inspections"): READERS,
    ("GET", "/api/v1/plates/<barcode:barcode>/scores.csv"): READERS,
    ("GET", "/api/v1/inspections/<id:inspection_id>/drops"): READERS,
    ("GET", "/api/v1/inspections/<id:inspection_id>/autoscores"): READERS,
    ("GET", "/api/v1/images"): READERS,
    ("GET", "/api/v1/images/<id:image_id>"): READERS,
    ("GET", "/api/v1/images/<id:image_id>/file"): READERS,
    ("GET", "/api/v1/images/<id:image_id>/heatmap.png"): READERS,
    ("GET", "/api/v1/images/<id:image_id>/thumbnail.jpg"): READERS,
    ("GET", "/api/v1/images/<id:image_id>/human-scores"): READERS,
    ("PUT", "/api/v1/images/<id:image_id>/human-score"): LABELLERS,
    ("PATCH", "/api/v1/human-scores/<id:human_id>"): LABELLERS,
    ("GET", "/api/v1/human-scores"): READERS,
    ("GET", "/api/v1/hits"): READERS,
    ("GET", "/api/v1/scores"): READERS,
    ("GET", "/api/v1/models"): READERS,
    ("GET", "/api/v1/models/<id:version_id>"): READERS,
    ("POST", "/api/v1/models/<id:version_id>/activate"): ADMINS,
    ("GET", "/api/v1/schemas"): READERS,
    ("GET", "/api/v1/schemas/<name>"): READERS,
    ("POST", "/api/v1/inspections"): UPLOADERS,
    ("POST", "/api/v1/edge/results"): UPLOADERS,
    ("GET", "/api/v1/edge/model"): UPLOADERS,
    ("GET", "/api/v1/edge/model/file"): UPLOADERS,
    ("GET", "/api/v1/edge/wanted"): UPLOADERS,
    ("PUT", "/api/v1/edge/images/<id:image_id>/file"): UPLOADERS,
    ("PUT", "/api/v1/edge/images/<id:image_id>/unavailable"): UPLOADERS,
}


def _upload_form() -> dict:
    manifest = {
        "barcode": "ACCESS-1",
        "imaged_at": "2024-06-01T10:00:00",
        "images": [{"file": "a.jpg", "well": "A1"}],
    }
    return {"metadata": json.dumps(manifest), "a.jpg": (io.BytesIO(jpeg_bytes(seed=5)), "a.jpg")}


@pytest.mark.slow
def test_every_role_on_every_endpoint(runtime: Runtime, tmp_path: Path) -> None:
    seeded = seed_scored_plate(runtime, tmp_path)
    app = create_app(Service(runtime))
    rules = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static" and not rule.endpoint.startswith("web.")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert rules == set(EXPECTED), "an endpoint is missing from (or extra in) EXPECTED"
    secrets = {role: tokens.create(runtime.db, role, f"{role}-user")[1] for role in ROLES}
    client = app.test_client()
    image = seeded["ids"][(1, "B1")]
    with client.put(
        f"/api/v1/images/{image}/human-score",
        json={"label": "Crystals", "scheme": "marco4"},
        headers={"Authorization": f"Bearer {secrets['scientist']}"},
    ) as made:
        human = made.get_json()["id"]
    inspection = client.get(
        f"/api/v1/plates/{BARCODE}/inspections",
        headers={"Authorization": f"Bearer {secrets['lims']}"},
    ).get_json()["inspections"][0]["id"]
    values = {
        "barcode": BARCODE,
        "inspection_id": inspection,
        "image_id": image,
        "human_id": human,
        "version_id": seeded["model_id"],
        "name": "marco4",
    }
    bodies = {
        "PUT": {"json": {"label": "Crystals", "scheme": "marco4"}},
        "PATCH": {"json": {"label": "Crystals", "scheme": "marco4"}},
    }
    wrong = []
    for (method, rule), allowed in sorted(EXPECTED.items()):
        url = rule
        for name, value in values.items():
            url = url.replace(f"<{name}>", str(value))
            for kind in ("id", "barcode"):
                url = url.replace(f"<{kind}:{name}>", str(value))
        for role in (None, *ROLES):
            headers = {"Authorization": f"Bearer {secrets[role]}"} if role else {}
            kwargs = bodies.get(method, {})
            if rule == "/api/v1/inspections":
                kwargs = {"data": _upload_form()}
            with client.open(url, method=method, headers=headers, **kwargs) as answer:
                status = answer.status_code
            if allowed is PUBLIC:
                expected_ok = status < 400 or status == 503
            elif role is None:
                expected_ok = status == 401
            elif role in allowed:
                expected_ok = (status not in (401, 403) and status < 500) or status == 503
            else:
                expected_ok = status == 403
            if not expected_ok:
                wrong.append(f"{method} {url} as {role or 'no token'}: {status}")
    assert not wrong, "\n".join(wrong)
    bad = client.get("/api/v1/plates", headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401 and bad.get_json()["title"] == "Invalid token"
