"""The lab-correction loop, run small (bench/lab_loop.py): a new lab's drops in a look the
shipped default model never saw are ingested and scored, 200 of them labelled as
HumanScores, exported, fine-tuned with the finetune preset (trunk frozen, 12 epochs) and
the new version promoted only if it beats the active one on the lab's held-out drops.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.lab_loop import LoopOptions, run_loop
from marco_svc import registry
from marco_svc.config import load_settings
from marco_svc.runtime import open_runtime
from marco_svc.train.promotion import promote
from tests.helpers import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    options = LoopOptions(
        labelled=200, held_out=160, epochs=12, freeze_epochs=12, export=False, jobs=1
    )
    options.work = tmp_path_factory.mktemp("lab-loop")
    return run_loop(options)


def test_the_corrections_go_through_the_real_pipeline(loop: dict[str, Any]) -> None:
    assert loop["base"] == "default:1" and loop["candidate"] == "lab-finetuned:1"
    assert loop["labels"]["labelled"] == loop["exported"] == 200
    assert 0 < loop["labels"]["corrected"] < 200  # the model was wrong on some drops
    assert sum(loop["training"]["images"].values()) == 200
    assert loop["before"]["examples"] == loop["after"]["examples"] == 160


def test_fine_tuning_improves_the_new_labs_held_out_accuracy(loop: dict[str, Any]) -> None:
    before, after = loop["before"], loop["after"]
    assert after["accuracy"] > before["accuracy"], (before, after)


def test_the_candidate_is_activated_exactly_when_better(loop: dict[str, Any]) -> None:
    before, after = loop["before"], loop["after"]
    better = (
        after["accuracy"] > before["accuracy"]
        and after["crystal_recall"] >= before["crystal_recall"]
    )
    assert loop["better"] is better and loop["activated"] is better
    assert loop["active_now"] == (loop["candidate"] if better else loop["base"])
    card = json.loads(Path(loop["card"]).read_text())
    record = card["metrics"]["promotion"]["lab-held-out"]
    assert record["activated"] is better
    assert record["incumbent"]["accuracy"] == before["accuracy"]
    assert card["metrics"]["evaluation"]["lab-held-out"]["examples"] == 160


def test_a_better_candidate_is_activated_and_a_worse_one_is_not(loop: dict[str, Any]) -> None:
    data = Path(loop["work"]) / "data"
    held_out = str(Path(loop["work"]) / "lab-held-out" / "manifest.csv")
    settings = load_settings(env={"MARCO_DATA_DIR": str(data)})
    runtime = open_runtime(settings)
    try:
        base = registry.find(settings, loop["base"])
        registry.activate(runtime.db, base.ref)  # as `marco-svc models activate default:1`
        # The recall guard may go either way on 60-odd crystal drops; with it loosened the
        # decision rests on the accuracy the fine-tune gained.
        loosened = promote(settings, runtime.db, loop["candidate"], held_out, recall_tolerance=1.0)
        assert loosened.better and loosened.activated
        assert registry.active_version(runtime.db) == ("lab-finetuned", "1")
    finally:
        runtime.close()

    env = {
        "MARCO_DATA_DIR": str(data),
        "MARCO_DATABASE_URL": "",
        "MARCO_CONFIG": "",
        "MARCO_MODEL": "",
    }
    done = run_cli("models", "promote", loop["base"], "--data", held_out, "--json", env=env)
    assert done.returncode == 0, done.stderr
    worse = json.loads(done.stdout)
    assert worse["candidate"]["accuracy"] < worse["incumbent"]["accuracy"]
    assert (worse["better"], worse["activated"]) == (False, False)
    assert any("read-only (shipped)" in reason for reason in worse["reasons"])
    listed = run_cli("models", "list", "--json", env=env)
    active = [entry["ref"] for entry in json.loads(listed.stdout) if entry["active"]]
    assert active == ["lab-finetuned:1"]
