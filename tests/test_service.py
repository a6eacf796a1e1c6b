"""The service: assembled once from the settings, started and stopped as one, its health
answered for the web app (on SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from marco_svc.config import Settings
from marco_svc.runtime import open_runtime
from marco_svc.service import Service
from tests.helpers import api_client, wait_for, write_jpeg

PLATE = "90j8_2018-04-11_RI1000-0081-2drop"


def test_assemble_follows_the_settings(settings: Settings, tmp_path: Path) -> None:
    bare = dataclasses.replace(settings, scoring_enabled=False)
    runtime = open_runtime(bare)
    try:
        assert Service.assemble(runtime).watcher is None
        service = Service.assemble(runtime, [tmp_path])
        assert service.watcher is not None and service.scorer is None
        assert service.watcher.roots == [str(tmp_path.resolve())]
    finally:
        runtime.close()


def test_a_service_starts_watches_reports_and_stops(settings: Settings, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    changed = dataclasses.replace(
        settings, scoring_enabled=False, watch_roots=[str(inbox)], watch_settle_seconds=0.2
    )
    runtime = open_runtime(changed)
    service = Service.assemble(runtime)
    client = api_client(service, "lims")
    try:
        with service:
            service.start()  # a second start is a no-op
            assert service.trouble() is None
            write_jpeg(inbox / PLATE / "90j8_01A_1.jpg")
            health = wait_for(
                lambda: (
                    (h := client.get("/healthz").get_json())["watcher"]["counts"].get("created")
                    and h
                ),
                what="the watched image in /healthz",
            )
            assert health["status"] == "ok" and health["watcher"]["alive"] is True
        assert service.watcher is not None and not service.watcher.alive()
        service.stop()  # a second stop is a no-op
        assert client.get("/healthz").status_code == 200, "a stopped service is not unhealthy"
        assert client.get("/api/v1/plates/90j8").status_code == 200
    finally:
        runtime.close()
