"""Scoring inside the service: the background worker, the scores API, the scores CLI."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from imager_adapters.record import ImageRecord
from marco_svc import registry
from marco_svc.db.models import Heatmap, Image, Score
from marco_svc.ingest import ingest
from marco_svc.runtime import Runtime
from marco_svc.scoring.worker import ScoringWorker
from marco_svc.service import Service
from tests.helpers import api_client, cli_json, run_cli, wait_for, write_jpeg
from tests.nets_helpers import write_model_folder
from tests.test_watch_cli import free_port, healthz, service, stop


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("tiny")
    for version in ("1", "2"):
        write_model_folder(root / version, "resnet-32", "tiny", version, seed=int(version))
    return [root / "1", root / "2"]


def add_images(runtime: Runtime, folder: Path, count: int, start: int = 0) -> list[int]:
    ids = []
    for i in range(start, start + count):
        path = write_jpeg(folder / f"{i}.jpg", seed=i, width=160, height=128)
        record = ImageRecord(path, "LAB-1", f"C{i + 1}", 1, datetime(2024, 3, 1), "RI-2")
        ids.append(ingest(runtime.db, record).image_id)
    runtime.scoring_queue.put(ids)
    return ids


def register_active(runtime: Runtime, folder: Path) -> registry.StoredModel:
    model = registry.register(runtime.settings, folder, db=runtime.db)
    registry.activate(runtime.db, model.ref)
    return model


def count(runtime: Runtime, model) -> int:
    with runtime.db.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_worker_scores_new_images_and_rescores_after_activation(
    runtime: Runtime, tmp_path: Path, tiny_models: list[Path]
) -> None:
    runtime.settings = replace(runtime.settings, heatmaps_for_hits=False)
    register_active(runtime, tiny_models[0])
    worker = ScoringWorker(runtime, poll_seconds=0.2)
    worker.start()
    try:
        add_images(runtime, tmp_path, 3)
        assert worker.wait_until_scored(120), worker.status()
        assert count(runtime, Score) == 3 and worker.status()["model"] == "tiny:1"
        add_images(runtime, tmp_path, 2, start=3)
        assert worker.wait_until_scored(120)
        assert count(runtime, Score) == 5
        second = registry.register(runtime.settings, tiny_models[1], db=runtime.db)
        registry.activate(runtime.db, second.ref)
        runtime.scoring_queue.put([])
        wait_for(lambda: count(runtime, Score) == 10, what="rescoring with tiny:2", timeout=120)
        assert worker.status()["model"] == "tiny:2" and worker.status()["last_error"] is None
    finally:
        worker.stop()
    assert not worker.status()["running"]


def test_worker_makes_heatmaps_for_hits_when_idle(
    runtime: Runtime, tmp_path: Path, tiny_models: list[Path]
) -> None:
    runtime.settings = replace(runtime.settings, crystal_rule="top_k:10", smoothgrad_samples=4)
    register_active(runtime, tiny_models[0])
    worker = ScoringWorker(runtime, poll_seconds=0.2)
    worker.start()
    try:
        add_images(runtime, tmp_path, 2)
        wait_for(lambda: count(runtime, Heatmap) == 2, what="heatmaps of both hits", timeout=180)
    finally:
        worker.stop()
    with runtime.db.session() as session:
        paths = session.scalars(select(Heatmap.path)).all()
    assert all(Path(p).read_bytes()[:4] == b"\x89PNG" for p in paths)


@pytest.fixture
def scored(runtime: Runtime, tmp_path: Path, tiny_models: list[Path]) -> list[int]:
    runtime.settings = replace(
        runtime.settings,
        crystal_rule="top_k:10",
        smoothgrad_samples=3,
        image_roots=[str(tmp_path)],  # served: the images live there
    )
    register_active(runtime, tiny_models[0])
    from marco_svc.scoring.engine import ScoringEngine

    ids = add_images(runtime, tmp_path, 3)
    ScoringEngine(runtime).run_pending()
    return ids


def test_scores_api(runtime: Runtime, scored: list[int]) -> None:
    client: FlaskClient = api_client(Service(runtime), "lims")

    def get(url: str):
        for _ in range(600):  # a heatmap being computed answers 202 + Retry-After
            with client.get(url) as answer:  # closes streamed files
                answer.get_data()
            if answer.status_code != 202:
                return answer
            assert int(answer.headers["Retry-After"]) >= 1
            time.sleep(0.2)
        raise AssertionError(f"{url} still computing")

    detail = client.get(f"/api/v1/images/{scored[0]}").get_json()
    assert detail["well"] == "C1" and detail["score"]["model"] == "tiny:1"
    assert len(detail["scores"]) == 1 and detail["human_scores"] == []
    assert get(f"/api/v1/images/{scored[0]}/file").data[:2] == b"\xff\xd8"
    assert client.get("/api/v1/images/999999").status_code == 404

    first = get(f"/api/v1/images/{scored[1]}/heatmap.png")
    assert first.status_code == 200 and first.data[:4] == b"\x89PNG"
    assert first.headers["X-Heatmap-Cached"] == "false"
    again = get(f"/api/v1/images/{scored[1]}/heatmap.png")
    assert again.headers["X-Heatmap-Cached"] == "true" and again.data == first.data
    other = get(f"/api/v1/images/{scored[1]}/heatmap.png?class=clear")
    assert other.headers["X-Heatmap-Class"] == "clear" and other.data != first.data
    bad = client.get(f"/api/v1/images/{scored[1]}/heatmap.png?class=Sludge")
    assert bad.status_code == 422 and "no class 'Sludge'" in bad.get_json()["detail"]
    assert count(runtime, Heatmap) == 2

    page = client.get("/api/v1/hits?limit=2").get_json()
    assert [h["id"] for h in page["hits"]] == scored[:2]
    rest = client.get(f"/api/v1/hits?since={page['next']}").get_json()
    assert [h["id"] for h in rest["hits"]] == scored[2:]
    assert client.get(f"/api/v1/hits?since={rest['next']}").get_json()["hits"] == []
    assert client.get("/api/v1/hits?since=x").status_code == 422


def test_scores_cli(runtime: Runtime, scored: list[int], cli_env: dict[str, str]) -> None:
    env = {**cli_env, "MARCO_CRYSTAL_RULE": "threshold:1.0"}
    assert cli_json("scores", "redecide", env=env) == {"scores": 3, "changed": 3}
    with runtime.db.session() as session:
        assert not any(session.scalars(select(Score.hit)))
    done = run_cli("scores", "heatmap", str(scored[0]), "--samples", "2", env=env)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).read_bytes()[:4] == b"\x89PNG"
    with runtime.db.session() as session:
        image = session.get(Image, scored[0])
        image.status = "new"
        session.query(Score).filter(Score.image_id == scored[0]).delete()
    result = cli_json("scores", "run", env=env)
    assert result == {"model": "tiny:1", "artifact": "keras", "images": 1}


@pytest.mark.slow
def test_serve_scores_what_it_watches(
    runtime: Runtime, cli_env: dict[str, str], tmp_path: Path, tiny_models: list[Path]
) -> None:
    register_active(runtime, tiny_models[0])
    root = tmp_path / "imager"
    root.mkdir()
    port = free_port()
    env = {
        **cli_env,
        "MARCO_WATCH_ROOTS": str(root),
        "MARCO_WATCH_SETTLE_SECONDS": "0.3",
        "MARCO_PORT": str(port),
        "MARCO_CRYSTAL_RULE": "top_k:10",
        "MARCO_HEATMAPS_FOR_HITS": "false",
    }
    with service("serve", env=env) as process:
        wait_for(lambda: healthz(port), what="the service to answer")
        for i in range(3):
            write_jpeg(root / "SC_2024-05-01_RI-1-1drop" / f"SC_0{i + 1}A_1.jpg", seed=i)
        health = wait_for(
            lambda: (h := healthz(port)) and h["scorer"]["scored"] >= 3 and h,
            what="the served scorer to score 3 images",
            timeout=180,
        )
        assert health["scorer"]["model"] == "tiny:1" and health["scorer"]["running"]
        import urllib.request

        lims = run_cli("tokens", "create", "--role", "lims", env=env).stdout.splitlines()[-1]
        poll = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/hits", headers={"Authorization": f"Bearer {lims}"}
        )
        with urllib.request.urlopen(poll) as answer:
            hits = json.load(answer)["hits"]
        assert sorted(h["well"] for h in hits) == ["A1", "A2", "A3"]
        stop(process)
