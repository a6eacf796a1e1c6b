"""The web page in a real headless Chromium (Debian's, driven by Playwright): sign in, open
a plate, colour by P(Crystals), open a drop from the keyboard, see its heatmap and change
the opacity, rescore with a key (the HumanScore lands and the plate shows it), switch the
inspection, compare two model versions. Screenshots go to test-artifacts/web/."""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from imager_adapters.record import ImageRecord
from marco_svc import registry, tokens
from marco_svc.config import Settings
from marco_svc.db.models import HumanScore, ModelVersion
from marco_svc.ingest import ingest
from marco_svc.runtime import Runtime
from marco_svc.scoring.lab_rules import LabRules
from marco_svc.scoring.store import ScoreResult, save_scores
from tests.helpers import ROOT, write_jpeg
from tests.nets_helpers import write_model_folder
from tests.test_http_limits import live_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "web"
DAYS = (datetime(2024, 7, 1, 8), datetime(2024, 7, 8, 8))
WELLS = ("A1", "A2", "A3", "B1", "B2", "B3")
HIT = {"Clear": 0.05, "Crystals": 0.85, "Other": 0.05, "Precipitate": 0.05}
CLEAR = {"Clear": 0.9, "Crystals": 0.04, "Other": 0.03, "Precipitate": 0.03}
MUDDY = {"Clear": 0.1, "Crystals": 0.1, "Other": 0.1, "Precipitate": 0.7}


def _model(runtime: Runtime, tmp_path: Path, version: str) -> ModelVersion:
    folder = tmp_path / f"model-{version}"
    write_model_folder(folder, arch="compact-two-head", name="tiny", version=version)
    stored = registry.register(runtime.settings, folder, db=runtime.db)
    registry.activate(runtime.db, stored.ref)
    with runtime.db.session() as session:
        return session.scalar(
            select(ModelVersion).where(ModelVersion.name == "tiny", ModelVersion.version == version)
        )


def seed(runtime: Runtime, tmp_path: Path) -> dict[str, Any]:
    """A 96x1 plate imaged on two days, scored by tiny:1 and (the active) tiny:2, which
    disagree on A3; B1 is a hit on day 8."""
    old, new = _model(runtime, tmp_path, "1"), _model(runtime, tmp_path, "2")
    served = runtime.settings.resolved_data_dir / "seed"
    ids: dict[tuple[int, str], int] = {}
    for day, at in enumerate(DAYS):
        for n, well in enumerate(WELLS):
            record = ImageRecord(
                path=write_jpeg(served / f"d{day}" / f"{well}.jpg", seed=7 * day + n),
                barcode="WEB-1",
                well=well,
                drop=1,
                inspected_at=at,
            )
            ids[(day, well)] = ingest(runtime.db, record).image_id
    rules = LabRules.parse("threshold:0.5")
    for model in (old, new):
        results = []
        for (day, well), image_id in ids.items():
            probs = HIT if (day, well) == (1, "B1") else CLEAR
            if well == "A3":
                probs = MUDDY if model is new else CLEAR
            results.append(ScoreResult(image_id, probs, max(probs, key=probs.get), {}, 3.0))
        save_scores(runtime.db, model, results, rules, {})
    return {"ids": ids}


@pytest.fixture
def site(runtime: Runtime, tmp_path: Path) -> Iterator[dict[str, Any]]:
    seeded = seed(runtime, tmp_path)
    _, secret = tokens.create(runtime.db, "scientist", "ada")
    settings: Settings = dataclasses.replace(runtime.settings, heatmap_wait_seconds=0.5)
    with live_server(settings) as server:
        yield {**seeded, "url": f"http://127.0.0.1:{server.effective_port}", "token": secret}


@pytest.fixture
def page() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on(  # a wrong token's sign-in answers 401, which Chromium logs as a failed load
            "console",
            lambda message: (
                errors.append(message.text)
                if message.type == "error" and "status of 401" not in message.text
                else None
            ),
        )
        page.errors = errors
        yield page
        browser.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def eventually(page: Any, expression: str, seconds: float = 30) -> None:
    """Poll a JavaScript expression (the page's CSP forbids wait_for_function's eval)."""
    for _ in range(int(seconds * 10)):
        if page.evaluate(expression):
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"never true: {expression}")


def cell(page: Any, image_id: int) -> Any:
    return page.locator(f'a.drop[data-image="{image_id}"]')


def background(locator: Any) -> str:
    return locator.evaluate("el => getComputedStyle(el).backgroundColor")


def test_a_scientist_reviews_a_plate(site: dict[str, Any], page: Any, runtime: Runtime) -> None:
    url, ids = site["url"], site["ids"]
    page.goto(url + "/")
    assert page.url.endswith("/signin"), "not signed in: the sign-in page"
    page.fill("#token", "wrong")
    page.click("button[type=submit]")
    assert "unknown or revoked" in page.inner_text(".error")
    page.fill("#token", site["token"])
    page.click("button[type=submit]")
    page.wait_for_url(url + "/plates")
    assert "ada" in page.inner_text("header")
    shot(page, "1-plates")

    page.click("text=WEB-1")
    page.wait_for_selector('#grid[data-ready="true"]')
    page.select_option("#colour-by", "p")
    page.select_option("#colour-class", "Crystals")
    hit, clear = cell(page, ids[(1, "B1")]), cell(page, ids[(1, "A1")])
    assert "hit" in hit.get_attribute("class")
    assert background(hit) != background(clear), "P(Crystals) colours the cells"
    shot(page, "2-plate-p-crystals")

    # the keyboard: from A1, down one row to B1, Enter opens it
    cell(page, ids[(1, "A1")]).focus()
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.image") == str(ids[(1, "B1")])
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"/drops/{ids[(1, 'B1')]}$"))
    page.wait_for_selector('#heat[data-loaded="true"]', state="attached", timeout=120_000)
    eventually(page, "document.getElementById('heat').naturalWidth > 0")
    page.fill("#opacity", "25")  # a range input: fill sets its value and fires input
    assert page.evaluate("getComputedStyle(document.getElementById('heat')).opacity") == "0.25"
    shot(page, "3-drop-heatmap")

    # rescore with a key: 2 = Crystals on MARCO's scale; the page moves to the next drop
    page.select_option("#scale", "marco4")
    page.locator("#viewer").focus()
    page.keyboard.press("2")
    page.wait_for_url(re.compile(rf"/drops/{ids[(1, 'B2')]}$"))
    with runtime.db.session() as session:
        stored = session.scalars(
            select(HumanScore).where(HumanScore.image_id == ids[(1, "B1")])
        ).all()
    assert [(h.label, h.scheme, h.who) for h in stored] == [("Crystals", "marco4", "ada")]
    shot(page, "4-next-drop")

    page.goto(url + "/plates/WEB-1")
    page.wait_for_selector('#grid[data-ready="true"]')
    page.select_option("#colour-by", "human")
    assert background(cell(page, ids[(1, "B1")])) == "rgb(43, 138, 62)", "Crystals, at once"
    assert background(cell(page, ids[(1, "A1")])) == "rgb(255, 255, 255)", "not reviewed"
    shot(page, "5-plate-human")

    # switch inspection: day 0's images
    first_day = page.locator("#inspection option").first.get_attribute("value")
    page.select_option("#inspection", first_day)
    page.wait_for_selector(f'a.drop[data-image="{ids[(0, "A1")]}"]')
    assert cell(page, ids[(1, "A1")]).count() == 0
    shot(page, "6-plate-day0")

    # compare two versions: they disagree on A3 only
    page.goto(url + "/models")
    shot(page, "7-models")
    page.select_option("select[name=barcode]", "WEB-1")
    page.select_option("select[name=model]", "tiny:2")
    page.select_option("select[name=compare]", "tiny:1")
    page.click("#compare-form button[type=submit]")
    page.wait_for_selector('#grid[data-ready="true"]')
    disagree = page.locator("a.drop.disagree")
    assert [disagree.nth(i).get_attribute("data-image") for i in range(disagree.count())] == [
        str(ids[(1, "A3")])
    ]
    assert "disagree on 1 drop(s)" in page.inner_text("#legend")
    shot(page, "8-compare")
    assert page.errors == [], page.errors
