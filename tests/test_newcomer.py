"""A newcomer's first commands, run as a user would: the same environment, one data folder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from marco_svc.labels import MERCK10_LABELS
from tests.helpers import ROOT, run_cli, write_jpeg


def user_env(home: Path) -> dict[str, str]:
    """A user with no marco-svc settings at all: only their per-user folders."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARCO_")}
    return {
        **env,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
    }


@pytest.mark.slow
def test_demo_then_plates_list_shows_the_demo_plate(tmp_path: Path) -> None:
    env = user_env(tmp_path)
    demo = run_cli("demo", "--json", "--image-size", "64x77", "--wells", "96", env=env)
    assert demo.returncode == 0, demo.stderr
    assert "oneDNN" not in demo.stderr and "absl" not in demo.stderr, "TensorFlow chatter"
    written = json.loads(demo.stdout)
    barcode = written["barcode"]
    plates = run_cli("plates", "list", "--json", env=env)
    assert plates.returncode == 0, plates.stderr
    assert barcode in {row["barcode"] for row in json.loads(plates.stdout)}
    settings = {
        r["name"]: r["value"] for r in json.loads(run_cli("settings", "--json", env=env).stdout)
    }
    assert settings["data_dir"] == str(tmp_path / "data" / "marco-svc")
    assert settings["database_url"].endswith("marco-svc/marco.sqlite3")


def test_serve_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_cli("serve", "--port", str(port), env=user_env(tmp_path))
    assert done.returncode != 0
    assert done.stderr.strip() == f"Error: port {port} is in use on 127.0.0.1"


@pytest.mark.slow
def test_piping_scores_into_head_is_quiet(tmp_path: Path) -> None:
    for n in range(40):
        write_jpeg(tmp_path / "drops" / f"{n}.jpg", seed=n)
    command = f"{sys.executable} -m marco_svc score --batch-size 2 {tmp_path / 'drops'} | head -1"
    done = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, timeout=300,
        env={**user_env(tmp_path), "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert json.loads(done.stdout)["model"] == "default:1"
    assert done.stderr == ""


@pytest.mark.slow
def test_exporting_the_shipped_default_makes_a_new_version_or_a_copy(tmp_path: Path) -> None:
    env = user_env(tmp_path)
    args = ("models", "export", "default", "--format", "tflite-fp32", "--count", "16", "--json")
    done = run_cli(*args, env=env)
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    assert made["model"] == "default:1-tflite-fp32"
    assert made["top1_agreement"] and min(made["top1_agreement"].values()) >= 0.99
    card = json.loads(run_cli("models", "show", "default:1-tflite-fp32", env=env).stdout)
    assert {"keras", "tflite-int8", "tflite-fp32"} <= set(card["artifacts"])

    out = tmp_path / "copy"
    copied = run_cli(*args[:-1], "--out", str(out), env=env)
    assert copied.returncode == 0, copied.stderr
    assert "tflite-fp32" in json.loads((out / "card.json").read_text())["artifacts"]
    shipped = Path(__file__).resolve().parents[1] / "models" / "default" / "1" / "card.json"
    assert "tflite-fp32" not in json.loads(shipped.read_text())["artifacts"], "shipped untouched"


@pytest.mark.slow
def test_evaluate_takes_the_demo_plates_own_truth(tmp_path: Path) -> None:
    env = user_env(tmp_path)
    demo = run_cli("demo", "--json", "--image-size", "64x77", "--drops", "1", env=env)
    truth = json.loads(demo.stdout)["truth"]
    done = run_cli("evaluate", "default", truth, "--out", str(tmp_path / "report"), "--json",
                   env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    labels = [row.split(",")[3] for row in Path(truth).read_text().splitlines()[1:]]
    assert report["evaluated"] == len(labels) == 96
    absent = sorted(set(MERCK10_LABELS) - set(labels))
    assert sorted(report["absent_classes"]) == absent
    figures = report["heads"]["merck10"]
    assert all(figures["per_class_accuracy"][label] is None for label in absent)
