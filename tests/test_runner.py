"""Runners: a registered model by its card, through Keras/TensorFlow or LiteRT (no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from marco_svc.labels import MARCO4, MARCO4_LABELS, MERCK10, MERCK10_LABELS
from marco_svc.nets.card import CardError, ModelCard
from marco_svc.nets.runner import (
    KerasRunner,
    LiteRTRunner,
    choose_format,
    label_probabilities,
    open_runner,
    top_label,
)
from tests.helpers import jpeg_bytes, litert_in_fresh_python
from tests.nets_helpers import write_model_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_head(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelCard, Path]:
    folder = tmp_path_factory.mktemp("two-head")
    return write_model_folder(folder, "resnet-32-two-head", tflite=True), folder


def images() -> list[bytes]:
    return [jpeg_bytes(320, 240, seed=1), jpeg_bytes(200, 260, seed=2), jpeg_bytes(128, 128, 3)]


def test_keras_and_litert_agree(two_head: tuple[ModelCard, Path]) -> None:
    card, folder = two_head
    keras_runner = open_runner(card, folder)
    litert_runner = open_runner(card, folder, "tflite-fp32")
    assert isinstance(keras_runner, KerasRunner) and isinstance(litert_runner, LiteRTRunner)
    batch_tf = np.stack([keras_runner.preprocess(data) for data in images()])
    batch_np = np.stack([litert_runner.preprocess(data) for data in images()])
    assert batch_tf.shape == (3, 128, 128, 1)
    assert np.max(np.abs(batch_tf - batch_np)) <= 1e-6  # merck_gray decodes identically
    out_tf, out_lite = keras_runner.predict(batch_tf), litert_runner.predict(batch_np)
    assert set(out_tf) == set(out_lite) == {MARCO4, MERCK10}
    for scheme in (MARCO4, MERCK10):
        assert np.max(np.abs(out_tf[scheme] - out_lite[scheme])) <= 1e-5
        assert np.allclose(out_tf[scheme].sum(axis=1), 1.0, atol=1e-5)
    rows = label_probabilities(card, out_tf)
    assert list(rows[0]) == list(MARCO4_LABELS) + list(MERCK10_LABELS)
    assert top_label(card, rows[0]) in MERCK10_LABELS  # the finer head


def test_litert_runner_does_not_import_tensorflow(two_head: tuple[ModelCard, Path]) -> None:
    _, folder = two_head
    image = folder.parent / "one.jpg"
    image.write_bytes(images()[0])
    done, report = litert_in_fresh_python(folder, "tflite-fp32", image)
    assert (report["tf"], report["keras"]) == (False, False)
    assert report["outputs"]["merck10"] == [1, 10]
    assert done.stderr == ""  # LiteRT's start-up INFO line is kept off stderr


def test_formats_and_checksums(two_head: tuple[ModelCard, Path], tmp_path: Path) -> None:
    card, folder = two_head
    assert choose_format(card) == "keras"
    with pytest.raises(CardError, match="has no tflite-int8 artifact"):
        choose_format(card, "tflite-int8")
    with pytest.raises(CardError, match="cannot run a savedmodel artifact"):
        choose_format(card, "savedmodel")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "model.tflite").write_bytes((folder / "model.tflite").read_bytes()[:-1] + b"\0")
    with pytest.raises(CardError, match="fails its sha256 check"):
        open_runner(card, damaged, "tflite-fp32")
    with pytest.raises(CardError, match=r"keras artifact .* is missing"):
        open_runner(card, damaged, "keras")


@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs were expected:UserWarning")
def test_full_int8_tflite_is_quantized_and_dequantized(tmp_path: Path) -> None:
    import keras
    import tensorflow as tf

    from marco_svc.nets.architectures import new_card

    keras.utils.set_random_seed(3)
    image = keras.Input((128, 128, 1), name="image")
    x = keras.layers.Conv2D(8, 3, strides=4, activation="relu")(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(image, {MERCK10: keras.layers.Dense(10, activation="softmax")(x)})
    rng = np.random.default_rng(0)
    samples = rng.uniform(-1, 1, (16, 128, 128, 1)).astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s[None]] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    (tmp_path / "model.tflite").write_bytes(converter.convert())
    card = new_card("resnet-32", "int8", "1")
    card.add_artifact("tflite-int8", tmp_path, "model.tflite")

    runner = open_runner(card, tmp_path, "tflite-int8")
    assert np.dtype(runner.input_details["dtype"]) == np.int8
    got = runner.predict(samples[:4])[MERCK10]
    expected = model(samples[:4])[MERCK10].numpy()
    assert got.dtype == np.float32
    assert np.max(np.abs(got - expected)) <= 0.02
