"""Importing the official MARCO model, tested with an official-format SavedModel whose weights
are random (built once per session from ../shared/marco_graph by tests/fake_marco.py)."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from marco_svc import registry
from marco_svc.config import Settings, load_settings
from marco_svc.labels import MARCO4, MARCO4_LABELS
from marco_svc.nets.card import sha256_of
from marco_svc.nets.import_marco import (
    TOLERANCE,
    ImportRefused,
    official_probabilities,
    sample_images,
)
from marco_svc.nets.runner import open_runner
from marco_svc.registry.import_marco import import_marco
from tests.conftest import MARCO_GRAPH, REAL_PLATE_IMAGES, needs_real_plate, needs_shared
from tests.fake_marco import FakeMarco, build_fake_official
from tests.helpers import run_cli

pytestmark = [needs_shared(MARCO_GRAPH), pytest.mark.shared, pytest.mark.slow]


def real_images() -> list[bytes]:
    return [p.read_bytes() for p in sorted(REAL_PLATE_IMAGES.glob("*.jpg"))]


@pytest.fixture(scope="session")
def official(tmp_path_factory: pytest.TempPathFactory) -> FakeMarco:
    """The official graph with random weights, BatchNorm statistics calibrated on plate images
    and generated ones, saved as a SavedModel with the original signatures."""
    calibration = sample_images(6)
    if REAL_PLATE_IMAGES.exists():
        calibration = real_images()[::48] + calibration
    dest = tmp_path_factory.mktemp("official") / "savedmodel"
    return build_fake_official(MARCO_GRAPH, dest, calibration)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(env={}, data_dir=tmp_path / "data")


def copy_of(official: FakeMarco, dest: Path) -> Path:
    shutil.copytree(official.path, dest)
    return dest


def assert_nothing_registered(settings: Settings) -> None:
    assert registry.registered(settings) == []


@needs_real_plate
def test_import_reproduces_the_official_model_on_the_96_real_images(
    official: FakeMarco, settings: Settings
) -> None:
    images = real_images()
    assert len(images) == 96
    result = import_marco(official.path, settings, images=images, images_from="the real plate")
    comparison = result.comparison
    low, high = comparison.probability_range
    print(
        f"\nimport on {comparison.images} real images: max |difference| "
        f"{comparison.max_abs_difference:.3g}; official probabilities in [{low:.4f}, {high:.4f}]"
    )
    assert comparison.images == 96
    assert comparison.max_abs_difference <= TOLERANCE
    assert low > 1e-3 and high < 0.999  # not saturated: the comparison means something

    card, folder = result.model.card, result.model.folder
    assert (card.architecture, card.heads) == ("marco-inception-v3", {MARCO4: list(MARCO4_LABELS)})
    assert (card.input_size, card.channels) == ((599, 599), 3)
    assert card.preprocessing == {"name": "marco", "size": 599}
    assert card.provenance["source_variables_sha256"] == sha256_of(official.path / "variables")
    assert card.version == card.provenance["source_variables_sha256"][:12]
    assert card.provenance["compared_images"] == 96
    assert card.provenance["max_abs_difference"] == comparison.max_abs_difference
    card.verify(folder)

    # The registered artifact, served like any other model, still matches the official graph.
    runner = open_runner(card, folder)
    sample = images[::16]
    ours = runner.predict(np.stack([runner.preprocess(data) for data in sample]))[MARCO4]
    _, theirs = official_probabilities(official.path, sample)
    assert np.max(np.abs(ours - theirs)) <= TOLERANCE

    again = import_marco(official.path, settings, images=images[:8])
    assert again.already_registered and again.model.ref == result.model.ref


def test_cli_imports_the_zip_then_activates_and_scores(official: FakeMarco, tmp_path: Path) -> None:
    archive = tmp_path / "savedmodel.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(official.path.rglob("*")):
            zf.write(file, Path("savedmodel") / file.relative_to(official.path))
    env = {"MARCO_DATA_DIR": str(tmp_path / "data"), "MARCO_CONFIG": "", "MARCO_MODEL": ""}
    done = run_cli(
        "models", "import-marco", str(archive), "--name", "marco-official", "--json", env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    imported = json.loads(done.stdout)
    assert imported["compared_images"] == 8 and imported["max_abs_difference"] <= TOLERANCE
    ref = imported["ref"]

    listed = json.loads(run_cli("models", "list", "--json", env=env).stdout)
    rows = [(m["ref"], m["in_database"], m["active"]) for m in listed]
    assert rows == [(ref, True, False), ("default:1", False, False)]  # the shipped default
    assert run_cli("models", "activate", ref, env=env).stdout.strip() == f"active: {ref}"

    images = tmp_path / "images"
    images.mkdir()
    data = sample_images(3)
    for i, content in enumerate(data):
        (images / f"drop{i}.jpg").write_bytes(content)
    broken = data[0][: len(data[0]) // 2]
    (images / "broken.jpg").write_bytes(broken)
    scored = run_cli("score", str(images), env=env)  # no --model: the active version
    assert scored.returncode == 1
    assert scored.stderr.strip() == "1 of 4 files could not be scored"
    records = {Path(r["path"]).name: r for r in map(json.loads, scored.stdout.splitlines())}
    assert records["broken.jpg"] == {
        "path": str(images / "broken.jpg"),
        "error": f"truncated JPEG: no end-of-image marker after {len(broken)} bytes",
    }
    _, official_probs = official_probabilities(official.path, data)
    for i in range(3):
        record = records[f"drop{i}.jpg"]
        assert record["model"] == ref
        probs = [record["probs"][label] for label in MARCO4_LABELS]
        assert np.max(np.abs(np.array(probs) - official_probs[i])) <= TOLERANCE
        assert record["top"] == max(record["probs"], key=record["probs"].get)
        assert record["p_crystal"] == record["probs"]["Crystals"]
        assert record["hit"] is (record["p_crystal"] >= 0.5)
        assert record["rule"] == {
            "kind": "threshold",
            "k": 3,
            "threshold": 0.5,
            "operating_point": None,
        }


def _foreign_saved_model(dest: Path) -> Path:
    module = tf.Module()
    module.w = tf.Variable(tf.ones([3, 4]))
    module.f = tf.function(
        lambda x: tf.matmul(x, module.w), input_signature=[tf.TensorSpec([None, 3])]
    )
    tf.saved_model.save(module, str(dest), signatures=module.f)
    return dest


def _with_graph_edit(official: FakeMarco, dest: Path) -> Path:
    """The same variables under a look-alike graph: the resize with align_corners=True."""
    copy_of(official, dest)
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((dest / "saved_model.pb").read_bytes())
    (node,) = [n for n in saved.meta_graphs[0].graph_def.node if n.op == "ResizeBilinear"]
    node.attr["align_corners"].b = True
    (dest / "saved_model.pb").write_bytes(saved.SerializeToString())
    return dest


def test_refusals_say_why(official: FakeMarco, settings: Settings, tmp_path: Path) -> None:
    images = sample_images(4)

    def refused(source: Path, pattern: str) -> str:
        with pytest.raises(ImportRefused, match=pattern) as caught:
            import_marco(source, settings, images=images)
        return str(caught.value)

    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", "is not a SavedModel: no saved_model.pb in it")
    (tmp_path / "notes.txt").write_text("hello")
    refused(tmp_path / "notes.txt", "is neither a SavedModel folder nor a .zip of one")

    no_weights = copy_of(official, tmp_path / "no_weights")
    shutil.rmtree(no_weights / "variables")
    refused(no_weights, r"has no variables \(variables/variables.index is missing\)")

    truncated = copy_of(official, tmp_path / "truncated")
    (data_file,) = (truncated / "variables").glob("variables.data-*")
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    refused(truncated, "cannot read the variables of .*: Read less bytes than requested")

    flipped = copy_of(official, tmp_path / "flipped")
    (data_file,) = (flipped / "variables").glob("variables.data-*")
    content = bytearray(data_file.read_bytes())
    content[len(content) // 3 : len(content) // 3 + 64] = bytes(64)
    data_file.write_bytes(bytes(content))
    refused(flipped, "cannot read the variables of .*[Cc]hecksum")

    garbled = copy_of(official, tmp_path / "garbled")
    (garbled / "saved_model.pb").write_bytes(b"\x08\x01garbage" * 100)
    refused(garbled, "cannot load")

    foreign = _foreign_saved_model(tmp_path / "foreign")
    refused(foreign, "is not the MARCO model: 392 of its 392 variables are missing")

    message = refused(
        _with_graph_edit(official, tmp_path / "lookalike"),
        r"does not reproduce .*: max \|difference\| of probabilities .* > 0.0001 on 4 images",
    )
    measured = float(message.split("probabilities ")[1].split(" >")[0])
    assert measured > TOLERANCE

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../outside/saved_model.pb", b"x")
    refused(evil, "unsafe path '../outside/saved_model.pb' in the zip")
    assert not (tmp_path.parent / "outside").exists()
    assert_nothing_registered(settings)


def test_cli_refusal_is_one_line(tmp_path: Path) -> None:
    foreign = _foreign_saved_model(tmp_path / "foreign")
    env = {"MARCO_DATA_DIR": str(tmp_path / "data"), "MARCO_CONFIG": ""}
    done = run_cli("models", "import-marco", str(foreign), env=env)
    assert done.returncode != 0
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"Error: {foreign} is not the MARCO model: 392 of its 392 variables are missing "
        "(e.g. Inception/AuxLogits/Conv2d_1b_1x1/BatchNorm/beta)"
    ]
    assert not (tmp_path / "data" / "models").exists() or not os.listdir(
        tmp_path / "data" / "models"
    )
