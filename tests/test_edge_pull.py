"""The server asks an edge agent for image files, with a real server and a real agent on
localhost (both databases): a scientist asks for the thumbnail of an edge image (202), the
agent sends the file, and the thumbnail and the file are then served like any image's,
with no second image or score; a file deleted on the imager PC answers 410 with the
reason the agent gave."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import func, select

from marco_svc.db.models import Image, Score
from marco_svc.edge.pull import GONE
from marco_svc.runtime import Runtime
from tests.helpers import run_cli, wait_for, write_jpeg
from tests.test_edge_end_to_end import background, status, stop
from tests.test_watch_cli import free_port, healthz

pytestmark = pytest.mark.slow
PLATE = "P1_2024-01-02_RI54-0001-2drop"


def fetch(port: int, path: str, token: str) -> tuple[int, dict[str, str], bytes]:
    """GET as a reader: status, headers and body (error answers included)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers.items()), answer.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers.items()), exc.read()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def token(role: str, name: str, env: dict[str, str]) -> str:
    made = run_cli("tokens", "create", "--role", role, "--name", name, env=env)
    assert made.returncode == 0, made.stderr
    return made.stdout.splitlines()[-1]


def counts(runtime: Runtime) -> tuple[int, int]:
    with runtime.db.session() as session:
        images = session.scalar(select(func.count()).select_from(Image))
        scores = session.scalar(select(func.count()).select_from(Score))
    return images, scores


def image_ids(runtime: Runtime) -> dict[str, int]:
    with runtime.db.session() as session:
        rows = session.execute(select(Image.id, Image.uri)).all()
    return {uri.rsplit("/", 1)[-1]: image_id for image_id, uri in rows}


def test_a_thumbnail_asked_for_is_fetched_from_the_imager_pc(
    runtime: Runtime, cli_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    server_env = {**cli_env, "MARCO_PORT": str(port), "MARCO_SCORING_ENABLED": "false"}
    robot = token("robot", "imager-1", cli_env)
    scientist = token("scientist", "ada", cli_env)
    watched, state = tmp_path / "imager", tmp_path / "edge-state"
    there = write_jpeg(watched / PLATE / "P1_01A_1.jpg", seed=1, width=160, height=120)
    deleted = write_jpeg(watched / PLATE / "P1_02B_2.jpg", seed=2, width=160, height=120)
    agent_env = {
        "MARCO_EDGE_TOKEN": robot,
        "MARCO_DATA_DIR": str(tmp_path / "agent-data"),
        "MARCO_CONFIG": "",
    }
    agent_args = [
        "edge", "--watch", str(watched), "--server", f"http://127.0.0.1:{port}",
        "--state", str(state), "--settle", "0.5", "--pull-seconds", "1",
    ]  # fmt: skip
    server_log, agent_log = tmp_path / "server.log", tmp_path / "agent.log"
    with background(["serve"], server_env, server_log) as server:
        wait_for(lambda: healthz(port), 120, "the server to answer")
        with background(agent_args, agent_env, agent_log) as agent:
            wait_for(
                lambda: status(state, agent_env)["outbox"]["sent"] == 2,
                300,
                "both results to arrive",
            )
            before = counts(runtime)
            ids = image_ids(runtime)
            thumb = f"/api/v1/images/{ids[there.name]}/thumbnail.jpg"
            asked, headers, _ = fetch(port, thumb, scientist)
            assert (asked, headers["Retry-After"]) == (202, "30")
            answer = wait_for(
                lambda: (got := fetch(port, thumb, scientist))[0] == 200 and got,
                120,
                "the agent to send the file",
            )
            assert answer[1]["Content-Type"] == "image/jpeg" and answer[2][:2] == b"\xff\xd8"
            code, _, data = fetch(port, f"/api/v1/images/{ids[there.name]}/file", scientist)
            assert code == 200
            assert sha(data) == sha(there.read_bytes()), "the same bytes"
            assert counts(runtime) == before, "no second image, no second score"

            deleted.unlink()
            gone = f"/api/v1/images/{ids[deleted.name]}/file"
            assert fetch(port, gone, scientist)[0] == 202
            code, _, body = wait_for(
                lambda: (got := fetch(port, gone, scientist))[0] == 410 and got,
                120,
                "the agent to say the file is gone",
            )
            assert json.loads(body)["detail"] == GONE
            stop(agent, agent_log)
        stop(server, server_log)
    assert counts(runtime) == before
    assert "Traceback" not in agent_log.read_text()
