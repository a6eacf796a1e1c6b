"""`marco-svc evaluate`: a tiny random two-head model on a small synthetic data set."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from marco_svc import registry
from marco_svc.cli import cli
from marco_svc.config import load_settings
from marco_svc.labels import MARCO4, MARCO4_LABELS, MERCK10, MERCK10_LABELS, TEN_TO_FOUR
from marco_svc.nets.architectures import new_card
from marco_svc.nets.card import ModelCard
from marco_svc.nets.runner import open_runner
from marco_svc.scoring.rules import CrystalRule, decide
from marco_svc.synth.dataset import write_dataset
from marco_svc.train.evaluation import data_name, plan_heads

pytestmark = pytest.mark.slow

PNG = b"\x89PNG\r\n\x1a\n"


def write_tiny_two_head(folder: Path, tflite: bool = False) -> ModelCard:
    """A few-hundred-parameter network with the two heads' layers (random weights)."""
    import keras

    keras.utils.set_random_seed(0)
    spread = keras.initializers.RandomNormal(stddev=3.0)  # confident, varied predictions
    inputs = keras.Input((128, 128, 1))
    x = keras.layers.Conv2D(8, 5, strides=8, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = {
        MARCO4: keras.layers.Dense(4, "softmax", kernel_initializer=spread, name=MARCO4)(x),
        MERCK10: keras.layers.Dense(10, "softmax", kernel_initializer=spread, name=MERCK10)(x),
    }
    model = keras.Model(inputs, outputs)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    card = new_card("resnet-32-two-head", "tiny", "1", notes="random weights, for tests")
    card.add_artifact("keras", folder, "model.keras")
    if tflite:
        import tensorflow as tf

        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        (folder / "model.tflite").write_bytes(converter.convert())
        card.add_artifact("tflite-fp32", folder, "model.tflite")
    card.save(folder)
    return card


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evaluate")
    write_tiny_two_head(root / "src", tflite=True)
    registry.register(load_settings(env={}, data_dir=root / "data"), root / "src")
    return root / "data"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 synthetic drops, two of each ten-way class."""
    return write_dataset(tmp_path_factory.mktemp("valset"), 20, seed=1, size=(64, 77))


def invoke(data_dir: Path, *args: str) -> Result:
    env = {"MARCO_DATA_DIR": str(data_dir), "MARCO_CONFIG": "", "MARCO_MODEL": ""}
    return CliRunner().invoke(cli, ["evaluate", *args], env=env)


def rows_of(manifest: Path) -> list[tuple[Path, str]]:
    with manifest.open(encoding="utf-8") as handle:
        return [(manifest.parent / r["path"], r["label"]) for r in csv.DictReader(handle)]


def test_report_files_and_figures_match_the_models_predictions(
    data_dir: Path, manifest: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    done = invoke(data_dir, "tiny", str(manifest), "--out", str(out), "--batch-size", "6")
    assert done.exit_code == 0, done.output
    assert f"report: {out / 'report.html'}" in done.output
    assert "marco4 (labels mapped from merck10): accuracy" in done.output
    assert "crystal recall" in done.output

    for head in (MARCO4, MERCK10):
        for kind in ("confusion", "roc"):
            assert (out / f"{kind}_{head}.png").read_bytes()[:8] == PNG
    page = (out / "report.html").read_text()
    assert "confusion_merck10.png" in page and "tiny:1" in page
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["model"], metrics["evaluated"], metrics["failed"]) == ("tiny:1", 20, [])
    assert metrics["mapped"] == {MARCO4: MERCK10} and metrics["skipped"] == {}

    # the model's predictions, image by image, through a runner of our own
    model = registry.find(load_settings(env={}, data_dir=data_dir), "tiny")
    runner = open_runner(model.card, model.folder, "keras")
    rows = rows_of(manifest)
    outputs = runner.predict(np.stack([runner.preprocess(p.read_bytes()) for p, _ in rows]))
    truth = {
        MERCK10: [MERCK10_LABELS.index(label) for _, label in rows],
        MARCO4: [MARCO4_LABELS.index(TEN_TO_FOUR[label]) for _, label in rows],
    }
    for head, y_true in truth.items():
        figures = metrics["heads"][head]
        y_pred = outputs[head].argmax(axis=1)
        assert figures["accuracy"] == pytest.approx(np.mean(y_pred == np.array(y_true)))
        confusion = np.array(figures["confusion"]["rows_true_columns_predicted"])
        support = np.array(list(figures["support"].values()))
        assert np.allclose(confusion[support > 0].sum(axis=1), 1.0, atol=1e-5)
        assert figures["top_k_accuracy"]["top_1"] == figures["accuracy"]
        assert figures["examples"] == 20
    assert metrics["heads"][MERCK10]["support"] == dict.fromkeys(MERCK10_LABELS, 2)


def test_update_card_stores_figures_that_threshold_rules_read(
    data_dir: Path, manifest: Path, tmp_path: Path
) -> None:
    settings = load_settings(env={}, data_dir=data_dir)
    before = registry.find(settings, "tiny").card
    args = ["tiny", str(manifest), "--out", str(tmp_path / "r"), "--update-card", "--json"]
    done = invoke(data_dir, *args)
    assert done.exit_code == 0, done.output
    output = json.loads(done.stdout)
    name = data_name(str(manifest))
    assert output["data_name"] == name == manifest.parent.name
    card_file = Path(output["card"])
    assert card_file == registry.find(settings, "tiny").folder / "card.json"

    card = registry.find(settings, "tiny").card
    assert card.metrics != before.metrics and card.artifacts == before.artifacts
    figures = card.metrics["evaluation"][name]
    assert set(figures["heads"]) == {MARCO4, MERCK10}
    for head in (MARCO4, MERCK10):
        assert figures["heads"][head]["accuracy"] == output["heads"][head]["accuracy"]
        assert set(figures["heads"][head]["crystal_miss_rate"]) == {"top_1", "top_2", "top_3"}
    point = card.operating_points["fpr_0.016"]
    assert point["head"] == MARCO4  # the head whose P(Crystals) the rules read
    assert (
        point["threshold"]
        == output["heads"][MARCO4]["crystal"]["operating_points"]["fpr_0.016"]["threshold"]
    )
    rule = CrystalRule.parse("threshold:op=fpr_0.016")
    probs = dict.fromkeys(card.labels, 0.0) | {"Crystals": point["threshold"]}
    decision = decide(probs, rule, card.operating_points)
    assert decision.hit and decision.rule["threshold"] == point["threshold"]
    card.verify(registry.find(settings, "tiny").folder)  # artifacts untouched


def test_four_way_data_skips_the_ten_way_head_and_bad_images_are_listed(
    data_dir: Path, manifest: Path, tmp_path: Path
) -> None:
    root = tmp_path / "four"
    for i, (path, label) in enumerate(rows_of(manifest)):
        folder = root / TEN_TO_FOUR[label].lower()
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / f"{i}.jpg")
    (root / "clear" / "broken.jpg").write_bytes(b"not a jpeg at all")
    out = tmp_path / "r"
    done = invoke(data_dir, "tiny", str(root), "--out", str(out), "--format", "tflite-fp32")
    assert done.exit_code == 0, done.output
    assert "skipped merck10:" in done.output and "20 of 21 images" in done.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["heads"]) == [MARCO4] and metrics["format"] == "tflite-fp32"
    assert metrics["data_scheme"] == MARCO4 and "four-way labels" in metrics["skipped"][MERCK10]
    assert [f["source"] for f in metrics["failed"]] == [str(root / "clear" / "broken.jpg")]
    assert not (out / "confusion_merck10.png").exists()


def test_ten_way_only_model_on_four_way_labels_has_nothing_to_score() -> None:
    card = new_card("resnet-32", "ten", "1")
    assert plan_heads(card, MARCO4)[0] == []
    assert plan_heads(new_card("resnet-32-two-head", "two", "1"), MERCK10)[0] == [MARCO4, MERCK10]


def one_line_error(done: Result) -> str:
    assert done.exit_code != 0
    lines = done.output.strip().splitlines()
    assert len(lines) == 1, done.output
    return lines[0]


def test_bad_input_is_one_line(data_dir: Path, manifest: Path, tmp_path: Path) -> None:
    assert "no model 'nope'" in one_line_error(invoke(data_dir, "nope", str(manifest)))
    empty = tmp_path / "empty.csv"
    empty.write_text("path,label\n")
    assert "has no labelled images" in one_line_error(invoke(data_dir, "tiny", str(empty)))
    bad = tmp_path / "bad.csv"
    bad.write_text(f"path,label\n{rows_of(manifest)[0][0]},banana\n")
    assert "unknown labels" in one_line_error(invoke(data_dir, "tiny", str(bad)))
    garbage = tmp_path / "garbage"
    for label in MARCO4_LABELS:
        (garbage / label).mkdir(parents=True)
        (garbage / label / "x.jpg").write_bytes(b"junk")
    message = one_line_error(invoke(data_dir, "tiny", str(garbage), "--out", str(tmp_path / "o")))
    assert "none of the 4 images" in message


def test_shipped_cards_are_not_updated(
    data_dir: Path, manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = tmp_path / "shipped"
    shutil.copytree(
        registry.find(load_settings(env={}, data_dir=data_dir), "tiny").folder,
        shipped / "boxed" / "1",
    )
    card = ModelCard.load(shipped / "boxed" / "1")
    card.name = "boxed"
    card.save(shipped / "boxed" / "1")
    monkeypatch.setattr(registry.store, "SHIPPED_DIR", shipped)
    message = one_line_error(invoke(data_dir, "boxed", str(manifest), "--update-card"))
    assert "ships with marco-svc" in message and "read-only" in message


def test_update_card_refreshes_an_existing_database_row(
    data_dir: Path, manifest: Path, tmp_path: Path
) -> None:
    from sqlalchemy import select

    from marco_svc.db.models import ModelVersion
    from marco_svc.runtime import open_runtime

    settings = load_settings(env={}, data_dir=tmp_path / "data")
    source = registry.find(load_settings(env={}, data_dir=data_dir), "tiny").folder
    runtime = open_runtime(settings)
    try:
        registry.register(settings, source, db=runtime.db)
        args = ["tiny", str(manifest), "--out", str(tmp_path / "r"), "--update-card"]
        done = invoke(tmp_path / "data", *args)
        assert done.exit_code == 0, done.output
        with runtime.db.session() as session:
            row = session.execute(select(ModelVersion)).scalar_one()
            assert row.card["operating_points"]["fpr_0.016"]["head"] == MARCO4
            assert data_name(str(manifest)) in row.metrics["evaluation"]
    finally:
        runtime.close()


def test_tfrecord_shards_are_read_and_bad_records_listed(
    data_dir: Path, manifest: Path, tmp_path: Path
) -> None:
    import tensorflow as tf

    from marco_svc.train.datasets import read_dataset
    from marco_svc.train.evaluation import evaluate_model

    def feature(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    shard = tmp_path / "validation-00000-of-00001"
    rows = rows_of(manifest)
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for path, label in [*rows, (None, rows[0][1])]:
            data = path.read_bytes() if path else b"broken"
            example = {"image/encoded": feature(data), "image/class/text": feature(label.encode())}
            message = tf.train.Example(features=tf.train.Features(feature=example))
            writer.write(message.SerializeToString())
    labelled = read_dataset(str(tmp_path / "validation-*"), MERCK10)
    model = registry.find(load_settings(env={}, data_dir=data_dir), "tiny")
    seen: list[int] = []
    result = evaluate_model(model, labelled, "keras", 3, lambda done, _: seen.append(done))
    assert seen == list(range(1, 22)) and result.evaluated == 20
    assert [source for source, _ in result.failed] == [f"{shard}#20"]
    direct = open_runner(model.card, model.folder, "keras")
    probs = direct.predict(np.stack([direct.preprocess(p.read_bytes()) for p, _ in rows]))
    assert np.allclose(result.heads[MERCK10].probs, probs[MERCK10], atol=1e-6)
    assert data_name(str(tmp_path / "validation-*")) == "validation"
