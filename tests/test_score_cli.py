"""`marco-svc score` and `marco-svc models show` as a user runs them (no database)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from marco_svc import registry
from marco_svc.config import load_settings
from marco_svc.labels import CRYSTAL_CLASSES_10, MARCO4_LABELS, MERCK10_LABELS
from marco_svc.scoring.rules import CrystalRule, decide
from tests.conftest import REAL_PLATE_IMAGES
from tests.helpers import run_cli, write_jpeg
from tests.nets_helpers import write_model_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with one registered two-head ResNet-32 (random weights, keras + tflite)."""
    root = tmp_path_factory.mktemp("score")
    write_model_folder(root / "src", "resnet-32-two-head", name="tiny", version="1", tflite=True)
    settings = load_settings(env={}, data_dir=root / "data")
    registry.register(settings, root / "src")
    return root / "data"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    if REAL_PLATE_IMAGES.exists():
        paths = sorted(REAL_PLATE_IMAGES.glob("*.jpg"))[:3]
    else:
        paths = [write_jpeg(folder / f"d{i}.jpg", seed=i, width=320, height=240) for i in range(3)]
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    return [paths[0], empty, *paths[1:]]


def env_for(data_dir: Path, **settings: str) -> dict[str, str]:
    env = {"MARCO_DATA_DIR": str(data_dir), "MARCO_CONFIG": "", "MARCO_MODEL": ""}
    env.update({f"MARCO_{k.upper()}": v for k, v in settings.items()})
    return env


def test_jsonl_records_in_input_order_with_the_configured_rule(
    data_dir: Path, images: list[Path]
) -> None:
    env = env_for(data_dir, crystal_rule="top_k:3")
    done = run_cli("score", "--model", "tiny", *map(str, images), env=env)
    assert done.returncode == 1
    assert done.stderr.strip() == "1 of 4 files could not be scored"
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["path"] for r in records] == [str(p) for p in images]
    assert records[1] == {"path": str(images[1]), "error": "empty file (0 bytes)"}
    rule = CrystalRule.parse("top_k:3")
    for record in records[:1] + records[2:]:
        probs = record["probs"]
        assert list(probs) == list(MARCO4_LABELS) + list(MERCK10_LABELS)
        assert record["top"] == max(MERCK10_LABELS, key=probs.get)  # the ten-way head's
        decision = decide(probs, rule)
        assert (record["hit"], record["p_crystal"]) == (decision.hit, decision.p_crystal)
        assert record["p_crystal"] == probs["Crystals"]  # the four-way head's value
        assert record["rule"] == {
            "kind": "top_k",
            "k": 3,
            "threshold": None,
            "operating_point": None,
        }
        assert record["model"] == "tiny:1"
        assert sum(probs[c] for c in CRYSTAL_CLASSES_10) <= 1.0


def test_csv_through_litert_matches_keras(data_dir: Path, images: list[Path]) -> None:
    good = [str(images[0]), str(images[2])]
    env = env_for(data_dir, model="tiny")  # the `model` setting picks it
    by_keras = run_cli("score", "--format", "csv", *good, env=env)
    by_litert = run_cli("score", "--format", "csv", "--artifact", "tflite-fp32", *good, env=env)
    assert by_keras.returncode == by_litert.returncode == 0, by_keras.stderr + by_litert.stderr
    assert by_keras.stderr == by_litert.stderr == ""
    tables = [list(csv.DictReader(io.StringIO(d.stdout))) for d in (by_keras, by_litert)]
    header = by_keras.stdout.splitlines()[0].split(",")
    assert header == [
        "path",
        "model",
        "top",
        "hit",
        "p_crystal",
        "rule",
        *MARCO4_LABELS,
        *MERCK10_LABELS,
        "error",
    ]
    for row_k, row_l in zip(*tables, strict=True):
        assert row_k["path"] == row_l["path"] and row_k["rule"] == "threshold:0.5"
        assert row_k["model"] == row_l["model"] != ""
        assert row_k["hit"] in ("true", "false") and row_k["error"] == ""
        for label in (*MARCO4_LABELS, *MERCK10_LABELS):
            assert abs(float(row_k[label]) - float(row_l[label])) <= 2e-5


def test_no_model_and_bad_rule_are_one_line_errors(
    data_dir: Path, images: list[Path], tmp_path: Path
) -> None:
    if registry.default_shipped() is None:  # once a default model ships, it is used
        done = run_cli("score", str(images[0]), env=env_for(tmp_path / "empty-data"))
        assert done.returncode != 0 and done.stdout == ""
        assert done.stderr.strip() == "Error: no model: pass --model or register/import one"
    env = env_for(data_dir, crystal_rule="threshold:op=fpr_0.016")
    done = run_cli("score", "--model", "tiny:1", str(images[0]), env=env)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "Error: the model card has no operating point 'fpr_0.016' (it has: none)"
    ]


def test_models_show(data_dir: Path) -> None:
    done = run_cli("models", "show", "tiny", env=env_for(data_dir))
    assert done.returncode == 0, done.stderr
    card = json.loads(done.stdout)
    assert (card["name"], card["architecture"], card["scheme"]) == (
        "tiny",
        "resnet-32-two-head",
        "both",
    )
    assert card["preprocessing"] == {"name": "merck_gray", "size": 128}
    assert set(card["artifacts"]) == {"keras", "tflite-fp32"}
    assert card["where"] == "registry"
