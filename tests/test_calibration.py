"""Confidence (issue 17): temperature scaling of the four-way head, fitted on held-out
probabilities, stored on the model card, applied in the one scoring path; the Unknown band
in the score record, the API, the crystal rule option and the web page; the CLI."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from imager_adapters.record import ImageRecord
from marco_svc import registry
from marco_svc.config import load_settings
from marco_svc.db.models import ModelVersion, Score
from marco_svc.ingest import ingest
from marco_svc.labels import MARCO4, MARCO4_LABELS, MERCK10
from marco_svc.nets.calibration import apply_temperature, softmax
from marco_svc.nets.card import CardError, ModelCard
from marco_svc.runtime import Runtime, open_runtime
from marco_svc.scoring.confidence import band
from marco_svc.scoring.lab_rules import LabRules
from marco_svc.scoring.rules import CrystalRule, RuleError, decide
from marco_svc.scoring.store import ScoreResult, redecide, save_scores
from marco_svc.service import Service
from marco_svc.train.calibration import (
    CalibrationError,
    calibrate_card,
    calibrate_head,
    expected_calibration_error,
    fit_temperature,
)
from marco_svc.train.evaluation import EvaluationResult, HeadResult
from marco_svc.train.metrics import evaluate
from tests.helpers import ROOT, api_client, run_cli, write_jpeg
from tests.nets_helpers import write_fake_model_folder
from tests.test_web_pages import signed_in

SURE = {"Clear": 0.9, "Crystals": 0.04, "Other": 0.03, "Precipitate": 0.03}
MUDDY = {"Clear": 0.3, "Crystals": 0.25, "Other": 0.2, "Precipitate": 0.25}  # top-1 0.3
CRYSTAL = {"Clear": 0.1, "Crystals": 0.8, "Other": 0.05, "Precipitate": 0.05}
CALIBRATION = {MARCO4: {"temperature": 1.5, "unknown_below": 0.5}}


def synthetic(n: int, sharpen: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(logits), and a network's probabilities softmax(logits *
    sharpen): overconfident by a temperature of `sharpen`."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, size=(n, 4))
    cumulative = np.cumsum(softmax(logits), axis=1)
    labels = (cumulative < rng.random((n, 1))).sum(axis=1)
    return labels, softmax(logits * sharpen)


# -- fitting and measuring ------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_fitting_recovers_a_known_temperature(temperature: float) -> None:
    labels, probs = synthetic(20_000, temperature)
    assert fit_temperature(labels, probs) == pytest.approx(temperature, rel=0.06)


def test_ece_drops_after_calibration_on_overconfident_data() -> None:
    labels, probs = synthetic(8_000, 3.0)
    test_labels, test_probs = synthetic(8_000, 3.0, seed=1)
    entry = calibrate_head(labels, probs, y_eval=test_labels, probs_eval=test_probs)
    assert entry["temperature"] > 2.5
    assert entry["ece_after"] < entry["ece_before"] / 4
    assert entry["nll_after"] < entry["nll_before"]
    assert (entry["examples"], entry["fitted_examples"], entry["bins"]) == (8_000, 8_000, 15)
    assert entry["unknown_below"] == 0.5 and 0 < entry["unknown_share"] < 1
    assert entry["accuracy_confident"] > entry["accuracy_unknown"]


def test_ece_is_the_weighted_gap_between_accuracy_and_confidence() -> None:
    probs = np.array([[0.9, 0.1, 0, 0], [0.9, 0.1, 0, 0], [0.6, 0.4, 0, 0], [0.3, 0.7, 0, 0]])
    labels = np.array([0, 1, 0, 1])
    # bin (0.8667, 0.9333]: confidence 0.9, accuracy 0.5; bin (0.5333, 0.6]: 0.6 vs 1;
    # bin (0.6667, 0.7333]: 0.7 vs 1
    expected = (2 * 0.4 + 1 * 0.4 + 1 * 0.3) / 4
    assert expected_calibration_error(labels, probs) == pytest.approx(expected)


def test_temperature_on_probabilities_equals_temperature_on_logits() -> None:
    logits = np.random.default_rng(3).normal(0, 3, size=(50, 4))
    probs = softmax(logits).astype(np.float32)
    scaled = apply_temperature(probs, 2.0)
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled, softmax(logits / 2.0), atol=1e-6)
    assert (scaled.argmax(axis=1) == probs.argmax(axis=1)).all(), "the top class never moves"
    assert apply_temperature(probs, 1.0) is probs, "T = 1 leaves the probabilities untouched"


def test_calibrate_card_fits_on_validation_and_measures_on_test() -> None:
    card = ModelCard.from_dict(_card_dict())
    validation = _result("validation", *synthetic(3_000, 2.0))
    test = _result("test", *synthetic(2_000, 2.0, seed=5))
    served = calibrate_card(card, validation, test, unknown_below=0.6)
    entry = card.calibration[MARCO4]
    assert entry["temperature"] == pytest.approx(2.0, rel=0.1)
    assert (entry["fitted_on"], entry["evaluated_on"]) == ("validation", "test")
    assert (entry["fitted_examples"], entry["examples"], entry["unknown_below"]) == (
        3000,
        2000,
        0.6,
    )
    assert served.calibrated and served.data == "test"
    np.testing.assert_allclose(
        served.heads[MARCO4].probs,
        apply_temperature(test.heads[MARCO4].probs, entry["temperature"]),
    )
    # served thresholds: the operating points are measured on the calibrated probabilities
    crystal = served.heads[MARCO4].figures["crystal"]["operating_points"]
    assert crystal != test.heads[MARCO4].figures["crystal"]["operating_points"]
    with pytest.raises(CalibrationError, match="network's own"):
        calibrate_card(card, served)


# -- the card -------------------------------------------------------------------------------


def _card_dict(**changes: Any) -> dict[str, Any]:
    data = {
        "name": "c",
        "version": "1",
        "architecture": "marco-inception-v3",
        "heads": {MARCO4: list(MARCO4_LABELS)},
        "input_size": [599, 599],
    }
    return {**data, **changes}


def _result(name: str, labels: np.ndarray, probs: np.ndarray) -> EvaluationResult:
    figures = evaluate(labels, probs, MARCO4_LABELS)
    result = EvaluationResult("c:1", "keras", name, MARCO4, len(labels))
    result.heads[MARCO4] = HeadResult(MARCO4, labels, probs, figures)
    return result


def test_the_calibration_round_trips_through_the_card(tmp_path: Path) -> None:
    entry = {"temperature": 1.7, "unknown_below": 0.45, "ece_before": 0.2, "ece_after": 0.03}
    card = ModelCard.from_dict(_card_dict(calibration={MARCO4: entry}))
    card.save(tmp_path)
    again = ModelCard.load(tmp_path)
    assert again.calibration == {MARCO4: entry}
    assert again.to_dict() == card.to_dict()


def test_a_card_without_calibration_loads_and_saves_as_before(tmp_path: Path) -> None:
    shipped = json.loads((ROOT / "models" / "default" / "1" / "card.json").read_text())
    old = {key: value for key, value in shipped.items() if key != "calibration"}
    card = ModelCard.from_dict(old)
    assert card.calibration == {}
    assert "calibration" not in card.to_dict(), "an old card is written without the key"


@pytest.mark.parametrize(
    ("calibration", "message"),
    [
        ({MARCO4: {"temperature": 0}}, "temperature must be > 0"),
        ({MARCO4: {"temperature": -1.0}}, "temperature must be > 0"),
        ({MARCO4: {"temperature": float("nan")}}, "temperature must be > 0"),
        ({MARCO4: {"unknown_below": 0.5}}, "has no temperature"),
        ({MARCO4: {"temperature": 1.2, "unknown_below": 1.0}}, r"in \[0, 1\)"),
        ({MARCO4: {"temperature": 1.2, "unknown_below": -0.1}}, r"in \[0, 1\)"),
        ({MERCK10: {"temperature": 1.2}}, "no head of the model"),
        ([1.2], "must be an object"),
    ],
)
def test_bad_calibrations_are_refused(calibration: Any, message: str, tmp_path: Path) -> None:
    with pytest.raises(CardError, match=message):
        ModelCard.from_dict(_card_dict(calibration=calibration))
    card = ModelCard.from_dict(_card_dict())
    card.calibration = calibration
    with pytest.raises(CardError, match=message):
        card.save(tmp_path)
    assert not (tmp_path / "card.json").exists()


# -- the Unknown band and the rule option ---------------------------------------------------


def test_the_band_marks_low_confidence_calls_unknown() -> None:
    assert band(MUDDY, 0.5) == "unknown"
    assert band(SURE, 0.5) == "confident"
    assert band({**SURE, "Clear": 0.5}, 0.5) == "confident", "at the threshold: confident"
    assert band(MUDDY, None) is None, "an uncalibrated model has no band"
    assert band({"clear": 0.2, "bad drop": 0.8}, 0.5) is None, "no four-way head: no band"


def test_the_unknown_option_sends_unknown_drops_to_review_and_nothing_else() -> None:
    plain, review = (
        CrystalRule.parse("threshold:0.5"),
        CrystalRule.parse("threshold:0.5,unknown=hit"),
    )
    assert decide(MUDDY, plain, None, 0.5).hit is False
    muddy = decide(MUDDY, review, None, 0.5)
    assert (muddy.hit, muddy.band) == (True, "unknown")
    assert muddy.rule == {
        "kind": "threshold",
        "k": 3,
        "threshold": 0.5,
        "operating_point": None,
        "unknown": "hit",
        "unknown_below": 0.5,
    }
    rng = np.random.default_rng(7)
    for probs in softmax(rng.normal(0, 2, size=(500, 4))):
        four = dict(zip(MARCO4_LABELS, map(float, probs), strict=True))
        reviewed = decide(four, review, None, 0.5)
        if reviewed.band == "confident":
            assert reviewed.hit == decide(four, plain).hit, "confident drops: as today"
    assert decide(MUDDY, review).hit is False, "uncalibrated: no band, the rule alone"


def test_the_default_rule_decides_and_records_as_before() -> None:
    rule = CrystalRule.parse("threshold:0.5")
    assert rule.to_dict() == {
        "kind": "threshold",
        "k": 3,
        "threshold": 0.5,
        "operating_point": None,
    }
    for probs in (SURE, MUDDY, CRYSTAL):
        before, now = decide(probs, rule), decide(probs, rule, None, 0.5)
        assert now.hit == before.hit and now.p_crystal == before.p_crystal
        assert now.rule == {**before.rule, "unknown_below": 0.5}
        assert before.band is None


@pytest.mark.parametrize(
    "text",
    ["threshold:0.5,unknown=hit", "top_k:3,unknown=hit", "threshold:op=fpr_0.016,unknown=hit"],
)
def test_the_option_round_trips_in_text_and_records(text: str) -> None:
    rule = CrystalRule.parse(text)
    assert rule.unknown == "hit" and str(rule) == text
    assert CrystalRule.from_dict(rule.to_dict()) == rule
    assert CrystalRule.parse(text.replace("hit", "keep")) == CrystalRule.parse(text.split(",")[0])
    lab = LabRules.parse("threshold:0.5", f"HWI={text}; C3=top_k:2")
    assert lab.for_barcode("HWI-7") == rule and lab.for_barcode("C3-1").unknown == "keep"


@pytest.mark.parametrize("text", ["threshold:0.5,unknown=maybe", "top_k:3,review=yes"])
def test_bad_options_are_refused(text: str) -> None:
    with pytest.raises(RuleError, match="unknown=hit"):
        CrystalRule.parse(text)


# -- stored scores, the API and the web page ------------------------------------------------


def seed_calibrated(runtime: Runtime, tmp_path: Path, rule: str = "threshold:0.5") -> dict:
    """A calibrated model version, active, that scored A1 sure (Clear), A2 muddy and A3 a
    crystal; and an uncalibrated version that scored them the same."""
    folders = {}
    for version, calibration in (("1", CALIBRATION), ("2", {})):
        folder = write_fake_model_folder(
            tmp_path / f"src-{version}", "cal", version, arch="marco-inception-v3"
        )
        card = ModelCard.load(folder)
        card.calibration = calibration
        card.save(folder)
        folders[version] = registry.register(runtime.settings, folder, db=runtime.db)
    registry.activate(runtime.db, folders["1"].ref)
    ids = {}
    served = runtime.settings.resolved_data_dir / "seed"
    for n, well in enumerate(("A1", "A2", "A3")):
        record = ImageRecord(
            path=write_jpeg(served / f"{well}.jpg", seed=n),
            barcode="CAL-1",
            well=well,
            drop=1,
            inspected_at=datetime(2024, 6, 1, 9),
        )
        ids[well] = ingest(runtime.db, record).image_id
    with runtime.db.session() as session:
        rows = {v.version: v for v in session.scalars(select(ModelVersion))}
    for version in ("1", "2"):
        results = [
            ScoreResult(ids[w], p, max(p, key=p.get), {}, 2.0)
            for w, p in (("A1", SURE), ("A2", MUDDY), ("A3", CRYSTAL))
        ]
        save_scores(runtime.db, rows[version], results, LabRules.parse(rule), {})
    return ids


def test_scores_carry_their_band_in_the_api(runtime: Runtime, tmp_path: Path) -> None:
    ids = seed_calibrated(runtime, tmp_path)
    client = api_client(Service(runtime), "lims")
    image = client.get(f"/api/v1/images/{ids['A2']}").get_json()
    by_model = {s["model"]: s for s in image["scores"]}
    assert by_model["cal:1"]["band"] == "unknown"
    assert by_model["cal:1"]["rule"]["unknown_below"] == 0.5
    assert by_model["cal:2"]["band"] is None and "unknown_below" not in by_model["cal:2"]["rule"]
    assert image["score"]["band"] == "unknown", "the latest (active) score"
    sure = client.get(f"/api/v1/images/{ids['A1']}").get_json()["score"]
    assert sure["band"] == "confident" and sure["hit"] is False
    feed = client.get("/api/v1/scores?since=0").get_json()["scores"]
    assert {(s["id"], s["score"]["band"]) for s in feed} >= {(ids["A2"], "unknown")}


def test_the_rule_option_makes_unknown_drops_hits(runtime: Runtime, tmp_path: Path) -> None:
    ids = seed_calibrated(runtime, tmp_path, "threshold:0.5,unknown=hit")
    with runtime.db.session() as session:
        hits = {
            (row.image_id, row.model_version.version): row.hit
            for row in session.scalars(select(Score))
        }
    assert hits[(ids["A2"], "1")] is True, "muddy under the calibrated model: to review"
    assert hits[(ids["A2"], "2")] is False, "the uncalibrated model has no Unknown band"
    assert hits[(ids["A1"], "1")] is False and hits[(ids["A3"], "1")] is True
    # back to the plain rule: every record names the new rule, only the Unknown drop's hit
    assert redecide(runtime.db, LabRules.parse("threshold:0.5")) == {"scores": 6, "changed": 6}
    with runtime.db.session() as session:
        after = {
            (row.image_id, row.model_version.version): row.hit
            for row in session.scalars(select(Score))
        }
    assert {key for key in hits if hits[key] != after[key]} == {(ids["A2"], "1")}


def test_the_plate_page_shows_the_unknown_badge(runtime: Runtime, tmp_path: Path) -> None:
    ids = seed_calibrated(runtime, tmp_path)
    client = signed_in(runtime)
    page = client.get("/plates/CAL-1").get_data(as_text=True)
    grid = page.split('id="grid-data">', 1)[1].split("</script>", 1)[0]
    cells = {c["image_id"]: c for c in json.loads(grid)["cells"]}
    assert cells[ids["A2"]]["band"] == "unknown"
    assert cells[ids["A1"]]["band"] == cells[ids["A3"]]["band"] == "confident"
    assert 'id="unknown-count"' in page and ">1 Unknown</span>" in page
    assert '<option value="unknown">' in page
    uncalibrated = client.get("/plates/CAL-1?model=cal:2").get_data(as_text=True)
    assert 'id="unknown-count"' not in uncalibrated
    assert client.get(f"/drops/{ids['A2']}").get_data(as_text=True).count('id="unknown"') == 1
    assert 'id="unknown"' not in client.get(f"/drops/{ids['A1']}").get_data(as_text=True)
    models = client.get("/models").get_data(as_text=True)
    assert 'id="calibration"' in models and "<td>1.500</td>" in models


# -- the one scoring path ------------------------------------------------------------------


@pytest.mark.slow
def test_every_runner_serves_the_same_calibrated_probabilities(tmp_path: Path) -> None:
    """Server (Keras), edge agent (its LiteRT model) and evaluation all go through
    `score_batch`, which applies the card's temperature; the raw ones stay obtainable."""
    from marco_svc.edge.model_updates import open_model
    from marco_svc.nets.runner import open_runner
    from marco_svc.scoring.batch import Limits, score_batch
    from marco_svc.train.datasets import Example
    from marco_svc.train.evaluation import predict_examples
    from tests.nets_helpers import write_model_folder

    folder = tmp_path / "model"
    write_model_folder(folder, "resnet-32-two-head", name="cal", version="1", tflite=True)
    card = ModelCard.load(folder)
    card.calibration = {MARCO4: {"temperature": 2.5, "unknown_below": 0.5}}
    card.save(folder)
    files = [write_jpeg(tmp_path / "images" / f"{n}.jpg", seed=n) for n in range(3)]
    items = [(path.name, path.read_bytes()) for path in files]
    server = open_runner(ModelCard.load(folder), folder, "keras")
    edge = open_model(folder, "pinned").runner
    raw, _ = score_batch(server, items, Limits(), calibrated=False)
    served, _ = score_batch(server, items, Limits())
    at_edge, _ = score_batch(edge, items, Limits())
    for plain, scaled, remote in zip(raw, served, at_edge, strict=True):
        want = apply_temperature(plain.heads[MARCO4], 2.5)
        np.testing.assert_allclose(scaled.heads[MARCO4], want, atol=1e-6)
        assert not np.allclose(scaled.heads[MARCO4], plain.heads[MARCO4], atol=1e-4)
        np.testing.assert_array_equal(scaled.heads[MERCK10], plain.heads[MERCK10])
        assert scaled.probabilities["Crystals"] == pytest.approx(float(want[1]), abs=1e-6)
        assert scaled.top == plain.top
        for label, p in scaled.probabilities.items():
            assert remote.probabilities[label] == pytest.approx(p, abs=1e-4), "edge = server"
    examples = [Example(str(path), "Clear", str(path)) for path in files]
    _, evaluated, _ = predict_examples(server, examples, 2, None, None)
    _, own, _ = predict_examples(server, examples, 2, None, None, calibrated=False)
    np.testing.assert_allclose(evaluated[MARCO4], apply_temperature(own[MARCO4], 2.5), atol=1e-6)


# -- the CLI --------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_cli_calibrates_a_folder_and_refuses_a_version_that_scored(tmp_path: Path) -> None:
    from tests.nets_helpers import write_model_folder

    folder = tmp_path / "model"
    write_model_folder(folder, "resnet-32-two-head", name="cal", version="1", tflite=True)
    data = tmp_path / "labelled"
    lines = ["path,label"]
    for n in range(12):
        label = MARCO4_LABELS[n % 4]
        lines.append(f"{write_jpeg(data / f'{n}.jpg', seed=n).name},{label}")
    (data / "manifest.csv").write_text("\n".join(lines) + "\n")
    database = f"sqlite:///{tmp_path / 'marco.sqlite3'}"
    env = {
        "MARCO_DATA_DIR": str(tmp_path / "data"),
        "MARCO_DATABASE_URL": database,
        "MARCO_CONFIG": "",
        "MARCO_MODEL": "",
    }
    args = ("models", "calibrate", "--data", str(data / "manifest.csv"), "--format", "tflite-fp32")
    done = run_cli(*args, str(folder), "--unknown-below", "0.4", "--json", env=env)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    card = ModelCard.load(folder)
    card.verify(folder)
    entry = card.calibration[MARCO4]
    assert answer["calibration"] == {MARCO4: entry} and answer["card"] == str(folder / "card.json")
    assert entry["temperature"] > 0 and entry["unknown_below"] == 0.4
    assert (entry["examples"], entry["fitted_examples"], entry["format"]) == (12, 12, "tflite-fp32")
    assert {"ece_before", "ece_after", "nll_before", "nll_after"} <= set(entry)
    assert card.operating_points and all(
        op["data"].endswith("manifest.csv") for op in card.operating_points.values()
    ), "operating points measured again, on the calibrated probabilities"
    assert MERCK10 not in card.calibration

    # once its version has scored, the card stays; a calibrated copy is a new version
    settings = load_settings(env={}, data_dir=tmp_path / "data", database_url=database)
    runtime = open_runtime(settings)
    try:
        stored = registry.register(settings, folder, db=runtime.db)
        image = ingest(
            runtime.db,
            ImageRecord(
                path=write_jpeg(tmp_path / "data" / "x.jpg"),
                barcode="P",
                well="A1",
                drop=1,
                inspected_at=datetime(2024, 1, 1),
            ),
        ).image_id
        with runtime.db.session() as session:
            row = session.scalar(select(ModelVersion).where(ModelVersion.version == "1"))
        save_scores(
            runtime.db,
            row,
            [ScoreResult(image, SURE, "Clear", {}, 1.0)],
            LabRules.parse("top_k"),
            {},
        )
    finally:
        runtime.close()
    refused = run_cli(*args, "cal:1", env=env)
    assert refused.returncode == 1 and "1 stored scores" in refused.stderr
    assert ModelCard.load(stored.folder).calibration == card.calibration, "unchanged"
    copied = run_cli(*args, "cal:1", "--version", "1-cal", "--unknown-below", "0.3", env=env)
    assert copied.returncode == 0, copied.stderr
    assert "calibrated cal:1-cal (marco4)" in copied.stdout
    registered = registry.find(settings, "cal:1-cal")
    assert registered.where == "registry"
    assert registered.card.calibration[MARCO4]["unknown_below"] == 0.3
