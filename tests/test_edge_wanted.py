"""Edge images the server asks back, on both databases: a reader's ask (202 while the file
is on the imager PC), the agent's answers (the file, through the one ingest and without a
second image or score; or why it cannot come, then 410 with that reason), the drop page,
and the agent's FilePuller against the real app over HTTP."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage
from sqlalchemy import select
from werkzeug.serving import make_server

from marco_svc import tokens
from marco_svc.api import create_app
from marco_svc.db.models import EdgeImage, Image, ImageStatus, ModelVersion, Score
from marco_svc.edge.client import Server
from marco_svc.edge.pull import CHANGED, GONE, NOT_WATCHED, FilePuller
from marco_svc.file_access import FilePolicy
from marco_svc.runtime import Runtime
from marco_svc.scoring.store import pending_images
from marco_svc.service import Service
from tests.helpers import api_client, write_jpeg
from tests.test_edge_agent import _closed_port_url
from tests.test_edge_results import counts, post, register_model, result
from tests.test_web_pages import signed_in

WANTED = "/api/v1/edge/wanted"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def edge_image(robot: Any, model: dict[str, Any], n: int, path: Path) -> int:
    """Score `path` (a real JPEG) as the agent would report it; the image's id."""
    data = write_jpeg(path, seed=n, width=160, height=120).read_bytes()
    item = result(
        model, n, path=str(path), sha256=sha(data), size_bytes=len(data), width=160, height=120
    )
    (answer,) = post(robot, [item])
    assert answer["outcome"] == "stored", answer
    return answer["image_id"]


def urls(image_id: int) -> dict[str, str]:
    base = f"/api/v1/images/{image_id}"
    return {
        "thumbnail": f"{base}/thumbnail.jpg",
        "file": f"{base}/file",
        "heatmap": f"{base}/heatmap.png",
        "put": f"/api/v1/edge/images/{image_id}/file",
        "unavailable": f"/api/v1/edge/images/{image_id}/unavailable",
    }


def test_asked_for_then_sent_then_served_like_any_image(runtime: Runtime, tmp_path: Path) -> None:
    model = register_model(runtime, tmp_path)
    service = Service(runtime)
    robot, other = api_client(service, "robot", "imager-1"), api_client(service, "robot", "im-2")
    scientist = api_client(service, "scientist")
    path = tmp_path / "imager" / "EDGE-1" / "A1_1.jpg"
    image_id = edge_image(robot, model, 0, path)
    data = path.read_bytes()
    url = urls(image_id)
    before = counts(runtime)[:2]
    assert robot.get(WANTED).get_json() == {"images": []}, "nobody asked yet"

    for what in ("thumbnail", "file"):
        asked = scientist.get(url[what])
        assert asked.status_code == 202, asked.get_json()
        assert asked.headers["Retry-After"] == "30"
        assert "imager PC" in asked.get_json()["detail"]
    assert other.get(WANTED).get_json() == {"images": []}, "another agent is not asked"
    wanted = robot.get(WANTED).get_json()["images"]
    assert wanted == [
        {"image_id": image_id, "path": str(path), "sha256": sha(data), "size_bytes": len(data)}
    ]

    wrong = robot.put(url["put"], data=data[:-10], content_type="application/octet-stream")
    assert wrong.status_code == 409 and "sha256" in wrong.get_json()["detail"]
    sent = robot.put(url["put"], data=data, content_type="application/octet-stream")
    assert sent.status_code == 200, sent.get_json()
    assert sent.get_json() == {"image_id": image_id, "outcome": "stored"}
    assert counts(runtime)[:2] == before, "no second image, no second score"
    with runtime.db.session() as session:
        image = session.get(Image, image_id)
        sources = session.scalars(select(Score.source).where(Score.image_id == image_id)).all()
        stored = Path(image.uri)
        assert stored.is_relative_to(runtime.settings.resolved_data_dir / "uploads")
        assert image.status == ImageStatus.SCORED and sources == ["edge"]
        kept = session.get(EdgeImage, image_id)
        assert kept.remote_uri == f"edge://RI1000-0081/{path}", "where it came from is kept"
        assert kept.received_at is not None

    with scientist.get(url["file"]) as file:
        assert file.status_code == 200 and sha(file.data) == sha(data)
    with scientist.get(url["thumbnail"]) as thumb:
        assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
        assert max(PILImage.open(io.BytesIO(thumb.data)).size) <= 256
    assert robot.get(WANTED).get_json() == {"images": []}
    again = robot.put(url["put"], data=data, content_type="application/octet-stream")
    assert again.get_json() == {"image_id": image_id, "outcome": "duplicate"}

    # The edge's score by the active model stays; once another version scores on the
    # server, the image (now readable) is pending for it, as any server-side image is.
    register_model(runtime, tmp_path, version="2")
    with runtime.db.session() as session:
        ids = dict(session.execute(select(ModelVersion.version, ModelVersion.id)).all())
        assert pending_images(session, ids["1"], 10) == []
        assert [p.image_id for p in pending_images(session, ids["2"], 10)] == [image_id]


def test_a_file_that_cannot_come_answers_410_with_the_reason(
    runtime: Runtime, tmp_path: Path
) -> None:
    model = register_model(runtime, tmp_path)
    service = Service(runtime)
    robot, other = api_client(service, "robot", "imager-1"), api_client(service, "robot", "im-2")
    scientist = api_client(service, "scientist")
    image_id = edge_image(robot, model, 0, tmp_path / "imager" / "A1_1.jpg")
    url = urls(image_id)
    assert scientist.get(url["thumbnail"]).status_code == 202
    theirs = other.put(url["unavailable"], json={"reason": GONE})
    assert theirs.status_code == 403
    mine = robot.put(url["unavailable"], json={"reason": GONE})
    assert mine.get_json() == {"image_id": image_id, "outcome": "unavailable"}
    for what in ("thumbnail", "file", "heatmap"):
        answer = scientist.get(url[what])
        assert answer.status_code == 410, (what, answer.get_json())
        assert answer.get_json()["detail"] == GONE
    assert robot.get(WANTED).get_json() == {"images": []}, "the server stops asking"
    assert robot.put(url["unavailable"], json={"reason": "tab\there"}).status_code == 422
    missing = robot.put("/api/v1/edge/images/999/unavailable", json={"reason": GONE})
    assert missing.status_code == 404


def test_the_drop_page_says_where_the_file_is(runtime: Runtime, tmp_path: Path) -> None:
    model = register_model(runtime, tmp_path)
    robot = api_client(Service(runtime), "robot", "imager-1")
    image_id = edge_image(robot, model, 0, tmp_path / "imager" / "A1_1.jpg")
    page = signed_in(runtime).get(f"/drops/{image_id}").get_data(as_text=True)
    assert "requested from it" in page and 'id="frame"' not in page
    assert [i["image_id"] for i in robot.get(WANTED).get_json()["images"]] == [image_id]
    robot.put(urls(image_id)["unavailable"], json={"reason": CHANGED})
    page = signed_in(runtime, name="bob").get(f"/drops/{image_id}").get_data(as_text=True)
    assert "cannot come from the imager PC" in page and CHANGED in page


@pytest.fixture
def live(runtime: Runtime) -> Iterator[str]:
    """The app on a real HTTP port (in this process), for the agent's own HTTP client."""
    server = make_server("127.0.0.1", 0, create_app(Service(runtime)), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_the_puller_sends_what_is_there_and_says_why_not(
    runtime: Runtime, tmp_path: Path, live: str
) -> None:
    model = register_model(runtime, tmp_path)
    service = Service(runtime)
    _, secret = tokens.create(runtime.db, "robot", "imager-1")
    robot = api_client(service, "robot")
    robot.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    scientist = api_client(service, "scientist")
    watched = (tmp_path / "imager").resolve()
    paths = {
        "there": watched / "P" / "A1_1.jpg",
        "deleted": watched / "P" / "A2_1.jpg",
        "changed": watched / "P" / "A3_1.jpg",
        "elsewhere": tmp_path.resolve() / "not-watched" / "A4_1.jpg",
    }
    ids = {name: edge_image(robot, model, n, path) for n, (name, path) in enumerate(paths.items())}
    paths["deleted"].unlink()
    write_jpeg(paths["changed"], seed=99, width=160, height=120)
    for image_id in ids.values():
        assert scientist.get(urls(image_id)["thumbnail"]).status_code == 202

    puller = FilePuller(Server(live, secret), [str(watched)], FilePolicy().with_roots([watched]))
    report = puller.pull_once()
    assert (report.asked, report.sent, report.unavailable, report.error) == (4, 1, 3, None)
    with scientist.get(urls(ids["there"])["thumbnail"]) as thumb:
        assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    for name, reason in (("deleted", GONE), ("changed", CHANGED), ("elsewhere", NOT_WATCHED)):
        answer = scientist.get(urls(ids[name])["file"])
        assert (answer.status_code, answer.get_json()["detail"]) == (410, reason)
    assert puller.pull_once().asked == 0
    assert puller.next_wait(report) == puller.interval

    away = FilePuller(Server(_closed_port_url(), secret), [str(watched)], FilePolicy())
    trouble = away.pull_once()
    assert trouble.kind == "unreachable" and 0 < away.next_wait(trouble) <= 1.0
