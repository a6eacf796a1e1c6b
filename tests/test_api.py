"""The Flask app: health, plates and images as JSON, errors as problem documents."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from imager_adapters.registry import parse_path
from marco_svc.ingest import ingest
from marco_svc.runtime import Runtime
from marco_svc.service import Service
from tests.helpers import api_client, write_jpeg


@pytest.fixture
def client(runtime: Runtime) -> FlaskClient:
    return api_client(Service(runtime), "lims")


def test_healthz(client: FlaskClient, runtime: Runtime) -> None:
    answer = client.get("/healthz")
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["status"] == "ok"
    assert body["database"] == runtime.db.url.get_backend_name()


def test_plates_and_images(client: FlaskClient, runtime: Runtime, tmp_path: Path) -> None:
    folder = tmp_path / "B7_2024-03-04_RI2-0002-1drop"
    for seed, name in enumerate(["B7_01A_1.jpg", "B7_12H_1.jpg"]):
        ingest(runtime.db, parse_path(write_jpeg(folder / name, seed=seed)))
    plates = client.get("/api/v1/plates").get_json()["plates"]
    assert [(p["barcode"], p["plate_type"]) for p in plates] == [("B7", "96x1")]
    detail = client.get("/api/v1/plates/B7").get_json()
    assert detail["images"] == {"new": 2, "scored": 0, "failed": 0}
    inspection = client.get("/api/v1/plates/B7/inspections").get_json()["inspections"][0]
    drops = client.get(f"/api/v1/inspections/{inspection['id']}/drops").get_json()["drops"]
    assert [i["well"] for i in drops] == ["A1", "H12"]
    assert all("path" not in i for i in drops), "server paths are for admin tokens only"
    images = client.get("/api/v1/images?status=new").get_json()["images"]
    assert len(images) == 2


def test_errors_are_problem_documents(client: FlaskClient) -> None:
    answer = client.get("/api/v1/plates/NOPE")
    assert answer.status_code == 404
    assert answer.mimetype == "application/problem+json"
    assert answer.get_json()["title"] == "Plate not found"
    bad = client.get("/api/v1/images?status=bogus")
    assert bad.status_code == 422 and "status" in bad.get_json()["errors"]["query"]
    assert client.get("/no/such/page").status_code == 404


def test_index_lists_the_endpoints(client: FlaskClient) -> None:
    links = client.get("/api/v1", environ_base={"HTTP_AUTHORIZATION": ""}).get_json()["links"]
    for path in ("/healthz", "/api/v1/plates", "/api/v1/hits?since=0"):
        assert path in links.values()
        assert client.get(path).status_code == 200
