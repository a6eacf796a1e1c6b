"""The edge agent against the real server on localhost: the server goes away while the
agent scores the real plate, comes back, and every result arrives exactly once; the
agent's scores are the server's own LiteRT int8 scores of the same files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from marco_svc import registry
from marco_svc.db.models import Image, Score
from marco_svc.nets.runner import open_runner
from marco_svc.runtime import Runtime
from marco_svc.scoring.batch import Limits, score_batch
from tests.conftest import REAL_PLATE_IMAGES, needs_real_plate
from tests.helpers import ROOT, run_cli, wait_for
from tests.test_watch_cli import free_port, healthz

pytestmark = [pytest.mark.slow, pytest.mark.shared, needs_real_plate]


@contextmanager
def background(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """`python -m marco_svc ARGS` with its output in a file (a pipe would fill up)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    full_env.pop("MARCO_DEBUG", None)
    with log.open("a") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "marco_svc", *args], env=full_env, stdout=out, stderr=out
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def stop(process: subprocess.Popen, log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(90) == 0, log.read_text()[-3000:]


def status(state: Path, env: dict[str, str]) -> dict:
    done = run_cli("edge", "status", "--state", str(state), "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_results_survive_the_server_going_away_and_arrive_once(
    runtime: Runtime, cli_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    server_env = {**cli_env, "MARCO_PORT": str(port), "MARCO_SCORING_ENABLED": "false"}
    token = run_cli("tokens", "create", "--role", "robot", "--name", "imager-1", env=cli_env)
    assert token.returncode == 0, token.stderr
    robot = token.stdout.splitlines()[-1]
    watched, state = tmp_path / "imager", tmp_path / "edge-state"
    watched.mkdir()
    agent_env = {
        "MARCO_EDGE_TOKEN": robot,
        "MARCO_DATA_DIR": str(tmp_path / "agent-data"),
        "MARCO_CONFIG": "",
    }
    agent_args = [
        "edge", "--watch", str(watched), "--server", f"http://127.0.0.1:{port}",
        "--state", str(state), "--settle", "0.5",
    ]  # fmt: skip
    server_log, agent_log = tmp_path / "server.log", tmp_path / "agent.log"
    with background(["serve"], server_env, server_log) as server:
        wait_for(lambda: healthz(port), 120, "the server to answer")
        with background(agent_args, agent_env, agent_log) as agent:
            wait_for(lambda: status(state, agent_env)["model"], 120, "the agent to get a model")
            stop(server, server_log)  # the server goes away ...
            plate = watched / REAL_PLATE_IMAGES.name
            shutil.copytree(REAL_PLATE_IMAGES, plate)  # ... while the imager writes the plate
            images = sorted(plate.glob("*.jpg"))
            assert len(images) == 96
            wait_for(
                lambda: status(state, agent_env)["outbox"]["pending"] == 96,
                300,
                "96 results waiting in the outbox",
            )
            assert status(state, agent_env)["outbox"]["sent"] == 0
            assert "127.0.0.1" in agent_log.read_text(), "the unreachable server is logged"
            with background(["serve"], server_env, server_log) as again:  # ... and comes back
                wait_for(lambda: healthz(port), 120, "the server to answer again")
                wait_for(
                    lambda: status(state, agent_env)["outbox"]["sent"] == 96,
                    300,
                    "the agent to forward all 96",
                )
                stop(agent, agent_log)
                stop(again, server_log)
    assert status(state, agent_env)["outbox"] == {"pending": 0, "sent": 96, "failed": 0}

    with runtime.db.session() as session:
        scores = session.scalars(select(Score).where(Score.source == "edge")).all()
        images = session.scalar(select(func.count()).select_from(Image))
        feed = session.scalars(select(Score.feed_seq)).all()
        version = scores[0].model_version
        by_path = {
            score.image.uri.rsplit("/", 1)[-1]: score.probabilities
            for score in session.scalars(select(Score))
        }
    assert len(scores) == 96 == images == len(set(feed)), "each result stored exactly once"

    # the same files through the server's own LiteRT int8 path: the same numbers
    model = registry.find(runtime.settings, f"{version.name}:{version.version}")
    runner = open_runner(model.card, model.folder, "tflite-int8")
    items = [(path.name, path.read_bytes()) for path in sorted(REAL_PLATE_IMAGES.glob("*.jpg"))]
    scored, failed = score_batch(runner, items, Limits(runtime.settings.max_image_pixels))
    assert not failed
    for result in scored:
        edge = by_path[result.key]
        assert edge.keys() == result.probabilities.keys()
        for label, p in result.probabilities.items():
            assert edge[label] == pytest.approx(p, abs=1e-6), (result.key, label)
