"""The API under abuse, one test per finding of the attacker-style run: heatmaps bounded,
the token checked before the body, ids / limits / cursors / JSON out of range answered
404 or 422 (never 500), no server paths for non-admins, 405 with Allow."""

from __future__ import annotations

import dataclasses
import io
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from werkzeug.test import EnvironBuilder

from marco_svc import tokens
from marco_svc.api import create_app
from marco_svc.runtime import Runtime, open_runtime
from marco_svc.scoring import heatmaps
from marco_svc.service import Service
from tests.helpers import api_client
from tests.test_api_resources import BARCODE, seed_scored_plate
from tests.test_http_limits import CLIENT_TIMEOUT, live_server


def _open(port: int, path: str, token: str | None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=CLIENT_TIMEOUT) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.mark.slow
def test_heatmaps_are_computed_by_a_bounded_pool_and_health_stays_up(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded = seed_scored_plate(runtime, tmp_path)
    _, lims = tokens.create(runtime.db, "lims")
    png = tmp_path / "made.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    release, running, most = threading.Event(), [0], [0]
    lock = threading.Lock()

    def slow_compute(rt, image_id, version, class_label=None, params=None):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        release.wait(CLIENT_TIMEOUT)
        with lock:
            running[0] -= 1
        return heatmaps.HeatmapFile(png, class_label or "Crystals", {}, False)

    monkeypatch.setattr(heatmaps, "cached", lambda *args, **kw: None)
    monkeypatch.setattr(heatmaps, "compute", slow_compute)
    settings = dataclasses.replace(runtime.settings, threads=4, heatmap_wait_seconds=0.2)
    images = [seeded["ids"][key] for key in sorted(seeded["ids"])]
    wanted = [(image, label) for image in images for label in ("Clear", "Crystals", "Other")][:16]
    with live_server(settings) as server:
        port = server.effective_port
        assert _open(port, f"/api/v1/images/{images[0]}/heatmap.png", None)[0] == 401
        assert most[0] == 0, "no heatmap is computed for a caller without a token"
        answers: list[tuple[int, dict[str, str], bytes]] = []

        def ask(image: int, label: str) -> None:
            path = f"/api/v1/images/{image}/heatmap.png?class={label}"
            answers.append(_open(port, path, lims))

        askers = [threading.Thread(target=ask, args=pair) for pair in wanted]
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join(CLIENT_TIMEOUT * 2)
        assert len(answers) == 16, "every heatmap request was answered while they computed"
        assert {status for status, _, _ in answers} <= {202, 503}
        assert all(int(headers["Retry-After"]) >= 1 for _, headers, _ in answers)
        assert _open(port, "/healthz", None)[0] == 200, "health answers while heatmaps queue"
        release.set()
        path = f"/api/v1/images/{wanted[0][0]}/heatmap.png?class={wanted[0][1]}"
        for _ in range(100):
            status, _, body = _open(port, path, lims)
            if status == 200:
                break
            release.wait(0.1)
        assert status == 200 and body.startswith(b"\x89PNG")
    assert most[0] == settings.heatmap_workers == 1


def test_the_token_is_checked_before_the_body_is_read(runtime: Runtime) -> None:
    app = create_app(Service(runtime))
    _, lims = tokens.create(runtime.db, "lims")

    class Spy(io.BytesIO):
        reads = 0

        def read(self, *args):  # type: ignore[override]
            Spy.reads += 1
            return super().read(*args)

    for headers, status in (
        ({}, 401),
        ({"Authorization": "Bearer nope"}, 401),
        ({"Authorization": f"Bearer {lims}"}, 403),
    ):
        Spy.reads = 0
        body = Spy(b"x" * 100_000)
        environ = EnvironBuilder(
            path="/api/v1/inspections",
            method="POST",
            headers=headers,
            input_stream=body,
            content_length=100_000,
            content_type="multipart/form-data; boundary=b",
        ).get_environ()
        with app.test_client() as client:
            answer = client.open(environ)
        assert answer.status_code == status
        assert Spy.reads == 0, "the body was read before the token was checked"


def test_out_of_range_answers_404_or_422_never_500(runtime: Runtime, tmp_path: Path) -> None:
    seed_scored_plate(runtime, tmp_path)
    client = api_client(Service(runtime), "admin")
    huge = "9" * 4400
    for path, status in [
        ("/api/v1/images/99999999999999999999", 404),
        ("/api/v1/images/2147483648", 404),
        (f"/api/v1/images/{huge}", 404),
        ("/api/v1/images/0", 404),
        ("/api/v1/plates?limit=-1", 422),
        ("/api/v1/plates?limit=1000000", 422),
        (f"/api/v1/plates?limit={huge}", 422),
        ("/api/v1/plates?cursor=2147483648", 422),
        ("/api/v1/images?cursor=-5", 422),
        ("/api/v1/hits?since=2147483648", 200),
        ("/api/v1/scores?since=9223372036854775807", 200),
        ("/api/v1/scores?since=9223372036854775808", 422),
        ("/api/v1/hits?since=x", 422),
        ("/api/v1/plates/a%00b", 404),
        ("/api/v1/plates/%3Cscript%3E", 404),
        ("/api/v1/plates?barcode=a%00b", 422),
        ("/api/v1/hits?plate=%00", 422),
        ("/api/v1/hits?class=%3Cb%3E", 422),
        ("/api/v1/hits?model=../../etc", 422),
        ("/api/v1/scores?imaged_after=yesterday", 422),
    ]:
        answer = client.get(path)
        assert answer.status_code == status, (path, answer.status_code, answer.data[:200])
        if status >= 400:
            assert answer.mimetype == "application/problem+json", path
    image = f"/api/v1/images/{seed_first(runtime)}/human-score"
    deep = "[" * 100_000 + "]" * 100_000
    for body in (deep, '{"label": ' + "1" * 4400 + "}", '{"label": "Clear", "x": 1}'):
        answer = client.put(image, data=body, content_type="application/json")
        assert answer.status_code == 422, (body[:40], answer.data[:200])
    assert client.put(image, data=b"\xff{", content_type="application/json").status_code == 400
    for metadata in (deep, '{"barcode": "A\\u0000B"}', '{"n": ' + "1" * 4400 + "}"):
        upload = client.post("/api/v1/inspections", data={"metadata": metadata})
        assert upload.status_code == 422, (metadata[:40], upload.data[:200])


def seed_first(runtime: Runtime) -> int:
    from sqlalchemy import func, select

    from marco_svc.db.models import Image

    with runtime.db.session() as session:
        return session.scalar(select(func.min(Image.id)))


def test_server_paths_are_for_admins_only(runtime: Runtime, tmp_path: Path) -> None:
    seeded = seed_scored_plate(runtime, tmp_path)
    service = Service(runtime)
    lims, admin = api_client(service, "lims"), api_client(service, "admin")
    image = seeded["ids"][(0, "A1")]
    assert "path" not in lims.get(f"/api/v1/images/{image}").get_json()
    assert admin.get(f"/api/v1/images/{image}").get_json()["path"].endswith("A1.jpg")
    assert all("path" not in i for i in lims.get("/api/v1/images").get_json()["images"])
    assert all("path" not in i for i in lims.get("/api/v1/hits?since=0").get_json()["hits"])
    data_dir = str(runtime.settings.resolved_data_dir)
    (runtime.settings.resolved_data_dir / "seed" / "d0" / "A1.jpg").unlink()
    gone = lims.get(f"/api/v1/images/{image}/file")
    assert gone.status_code == 410 and data_dir not in gone.get_data(as_text=True)
    assert data_dir in admin.get(f"/api/v1/images/{image}/file").get_data(as_text=True)
    for client in (lims, admin):  # nothing else a lims token reads names a server folder
        for path in ("/api/v1/plates", f"/api/v1/plates/{BARCODE}", "/api/v1/scores?since=0"):
            if client is lims:
                assert data_dir not in client.get(path).get_data(as_text=True), path


def test_405_names_the_allowed_methods(runtime: Runtime) -> None:
    client = api_client(Service(runtime), "admin")
    answer = client.delete("/api/v1/plates")
    assert answer.status_code == 405 and answer.mimetype == "application/problem+json"
    assert set(answer.headers["Allow"].replace(" ", "").split(",")) >= {"GET"}
    assert "DELETE" not in answer.headers["Allow"]


def test_a_revoked_token_is_refused_at_once(runtime: Runtime) -> None:
    info, secret = tokens.create(runtime.db, "lims", "leaver")
    client = create_app(Service(runtime)).test_client()
    auth = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/plates", headers=auth).status_code == 200
    tokens.revoke(runtime.db, str(info.id))
    assert client.get("/api/v1/plates", headers=auth).status_code == 401


def test_settings_tokens_are_robots(runtime: Runtime) -> None:
    changed = open_runtime(dataclasses.replace(runtime.settings, api_tokens=["robot-secret"]))
    try:
        client = create_app(Service(changed)).test_client()
        auth = {"Authorization": "Bearer robot-secret"}
        assert client.get("/api/v1/plates", headers=auth).status_code == 403
    finally:
        changed.close()
