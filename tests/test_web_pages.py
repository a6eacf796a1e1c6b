"""The web page without a browser, on both databases: who may sign in, sessions that end
when their token is revoked, CSRF on every change made with a session, the pages' content
(escaped), the new-hits marker, and the 384x3 grid."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import delete, select

from imager_adapters.record import ImageRecord
from marco_svc import tokens
from marco_svc.api import create_app
from marco_svc.db.models import HumanScore, ModelVersion, Score
from marco_svc.ingest import ingest
from marco_svc.runtime import Runtime
from marco_svc.scoring.lab_rules import LabRules
from marco_svc.scoring.store import ScoreResult, save_scores
from marco_svc.service import Service
from tests.helpers import write_jpeg
from tests.test_api_resources import BARCODE, CRYSTAL, seed_scored_plate


def signed_in(runtime: Runtime, role: str = "scientist", name: str = "ada") -> FlaskClient:
    _, secret = tokens.create(runtime.db, role, name)
    client = create_app(Service(runtime)).test_client()
    answer = client.post("/signin", data={"token": secret, "next": "/plates"})
    assert answer.status_code == 302 and answer.headers["Location"] == "/plates"
    return client


def csrf_of(client: FlaskClient, path: str = "/plates") -> str:
    html = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


def test_who_may_sign_in(runtime: Runtime) -> None:
    client = create_app(Service(runtime)).test_client()
    assert client.get("/plates").headers["Location"] == "/signin?next=/plates"
    wrong = client.post("/signin", data={"token": "nope"})
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.get_data(as_text=True)
    _, robot = tokens.create(runtime.db, "robot")
    refused = client.post("/signin", data={"token": robot})
    assert refused.status_code == 401 and "Robot tokens" in refused.get_data(as_text=True)
    _, lims = tokens.create(runtime.db, "lims")
    away = client.post("/signin", data={"token": lims, "next": "//evil.example/x"})
    assert away.headers["Location"] == "/plates", "no open redirect"
    page = client.get("/plates")
    assert page.status_code == 200
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    cookie = page.request.headers.get("Cookie", "")
    assert lims not in cookie, "the session names the token's id, never the token"


def test_a_revoked_token_ends_its_session(runtime: Runtime) -> None:
    client = signed_in(runtime, "lims", "leaver")
    assert client.get("/plates").status_code == 200
    tokens.revoke(runtime.db, "leaver")
    assert client.get("/plates").status_code == 302
    assert client.get("/api/v1/plates").status_code == 401


def test_changes_with_a_session_need_its_csrf_token(runtime: Runtime, tmp_path: Path) -> None:
    seeded = seed_scored_plate(runtime, tmp_path)
    client = signed_in(runtime)
    url = f"/api/v1/images/{seeded['ids'][(1, 'A1')]}/human-score"
    body = {"label": "3D Crystals", "scheme": "ispyb10"}
    assert client.put(url, json=body).status_code == 403
    assert client.put(url, json=body, headers={"X-CSRF-Token": "forged"}).status_code == 403
    done = client.put(url, json=body, headers={"X-CSRF-Token": csrf_of(client)})
    assert done.status_code == 201 and done.get_json()["who"] == "ada"
    assert client.get("/api/v1/plates").status_code == 200, "reads need no CSRF token"
    assert client.post("/signout").status_code == 302
    assert client.get("/plates").status_code == 200, "sign-out without its CSRF token: ignored"
    client.post("/signout", data={"csrf": csrf_of(client)})
    assert client.get("/plates").status_code == 302


def test_lims_sessions_read_but_do_not_label(runtime: Runtime, tmp_path: Path) -> None:
    seeded = seed_scored_plate(runtime, tmp_path)
    client = signed_in(runtime, "lims", "lims-1")
    drop = client.get(f"/drops/{seeded['ids'][(1, 'B1')]}").get_data(as_text=True)
    assert "read only" in drop and 'id="scale"' not in drop
    url = f"/api/v1/images/{seeded['ids'][(1, 'B1')]}/human-score"
    answer = client.put(url, json={"label": "Clear"}, headers={"X-CSRF-Token": csrf_of(client)})
    assert answer.status_code == 403


def test_pages_show_the_plate_and_mark_new_hits(runtime: Runtime, tmp_path: Path) -> None:
    seeded = seed_scored_plate(runtime, tmp_path)
    client = signed_in(runtime)
    plates = client.get("/plates").get_data(as_text=True)
    assert BARCODE in plates and "new</span>" not in plates, "no visit yet: no marker"
    plate = client.get(f"/plates/{BARCODE}").get_data(as_text=True)
    grid = re.search(r'<script type="application/json" id="grid-data">(.*?)</script>', plate, re.S)
    cells = {c["image_id"]: c for c in json.loads(grid.group(1))["cells"]}
    b1 = cells[seeded["ids"][(1, "B1")]]
    assert (b1["well"], b1["hit"], b1["four"]["Crystals"]) == ("B1", True, 0.8)
    # a new hit after the visit (A2 scored afresh: its old score gone): the page marks it
    with runtime.db.session() as session:
        model = session.scalar(select(ModelVersion))
        session.execute(delete(Score).where(Score.image_id == seeded["ids"][(1, "A2")]))
    save_scores(
        runtime.db,
        model,
        [ScoreResult(seeded["ids"][(1, "A2")], CRYSTAL, "Crystals", {}, 3.0)],
        LabRules.parse("threshold:0.5"),
        {},
    )
    assert "1 new</span>" in client.get("/plates").get_data(as_text=True)
    drop = client.get(f"/drops/{seeded['ids'][(1, 'B1')]}").get_data(as_text=True)
    assert "Hit" in drop and "P(Crystals) ≥ 0.50" in drop and "day 7" in drop
    assert client.get("/drops/999999").status_code == 404
    models = client.get("/models").get_data(as_text=True)
    assert "seeded:1" in models


def test_markup_in_stored_text_is_escaped(runtime: Runtime, tmp_path: Path) -> None:
    seed_scored_plate(runtime, tmp_path)
    client = signed_in(runtime, "scientist", '<img src=x onerror="alert(1)">')
    page = client.get(f"/plates/{BARCODE}").get_data(as_text=True)
    assert "<img src=x" not in page and "&lt;img src=x" in page


def test_a_384_well_3_drop_plate_draws_every_drop(runtime: Runtime, tmp_path: Path) -> None:
    records = []
    for row in "ABCDEFGHIJKLMNOP":
        for column in (1, 24):
            for drop in (1, 2, 3):
                name = f"{row}{column}_{drop}.jpg"
                path = write_jpeg(runtime.settings.resolved_data_dir / "big" / name, seed=drop)
                records.append(
                    ImageRecord(
                        path=path,
                        barcode="BIG-384",
                        well=f"{row}{column}",
                        drop=drop,
                        inspected_at=datetime(2024, 9, 1),
                        plate_wells=384,
                        plate_drops=3,
                    )
                )
    for record in records:
        assert ingest(runtime.db, record).outcome == "created"
    client = signed_in(runtime)
    page = client.get("/plates/BIG-384").get_data(as_text=True)
    assert 'data-rows="16" data-columns="24" data-drops="3"' in page
    assert page.count('class="well"') == 384
    assert page.count('"image_id"') == len(records) == 96
    with runtime.db.session() as session:
        assert session.scalars(select(HumanScore)).all() == []


def test_quality_checks_read_as_values_against_limits() -> None:
    from marco_svc.web.pages import _quality_rows

    quality = {
        "flags": ["too_dark"],
        "checks": {
            "too_dark": {"flag": True, "value": 20.5, "limit": 50.0},
            "out_of_focus": {"flag": False, "value": 215.7469, "limit": 20.0},
        },
        "drop": {"radius": 433.0, "touches_border": False},
    }
    assert _quality_rows(quality) == [
        ("too dark", "20.5 (limit 50)", True),
        ("out of focus", "216 (limit 20)", False),
        ("drop radius", "433", False),
        ("drop touches border", "False", False),
    ]
