"""The preprocessing's LiteRT graph: TensorFlow's values, written by export, used by LiteRT runs."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from marco_svc.labels import MARCO4, MARCO4_LABELS
from marco_svc.nets import lite_preprocessing
from marco_svc.nets.card import CardError, ModelCard
from marco_svc.nets.lite_preprocessing import LitePreprocessor
from marco_svc.nets.preprocessing import MarcoPreprocessing, MerckGrayPreprocessing
from marco_svc.nets.runner import open_runner
from marco_svc.train.export import export_model
from tests.helpers import jpeg_bytes, litert_in_fresh_python
from tests.test_preprocessing import random_pixels

pytestmark = pytest.mark.slow

SIZE = 64


@pytest.mark.parametrize("shape", [(1024, 1224), (480, 640), (300, 200), (961, 1281)])
def test_graph_gives_the_numpy_and_tensorflow_values(tmp_path: Path, shape) -> None:
    import tensorflow as tf

    prep = MarcoPreprocessing(599)
    path = tmp_path / "preprocess.tflite"
    path.write_bytes(lite_preprocessing.build(prep))
    pixels = random_pixels(*shape, seed=shape[0])
    ours = LitePreprocessor(path, threads=2)(pixels)
    assert ours.shape == (599, 599, 3) and ours.dtype == np.float32
    # Measured bit-identical on this machine; 1e-6 leaves room for another CPU's kernels.
    assert np.abs(ours - prep.np_from_pixels(pixels)).max() <= 1e-6
    assert np.abs(ours - prep.tf_from_pixels(tf.constant(pixels)).numpy()).max() <= 1e-6


def test_an_area_resize_has_no_graph(tmp_path: Path) -> None:
    assert lite_preprocessing.build(MerckGrayPreprocessing(128)) is None
    card = marco_card()
    card.preprocessing = MerckGrayPreprocessing(SIZE).spec()
    assert lite_preprocessing.add_to(card, tmp_path) is False
    assert lite_preprocessing.FORMAT not in card.artifacts
    assert not (tmp_path / lite_preprocessing.FILE).exists()


def marco_card() -> ModelCard:
    return ModelCard(
        name="lite-prep",
        version="1",
        architecture="test-cnn",
        heads={MARCO4: list(MARCO4_LABELS)},
        input_size=(SIZE, SIZE),
        preprocessing=MarcoPreprocessing(SIZE).spec(),
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelCard, Path]:
    """A tiny four-way CNN on `marco` 64x64 inputs, exported to int8 by export_model."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Softmax(name=MARCO4)(keras.layers.Dense(4)(x))
    folder = tmp_path_factory.mktemp("lite-prep")
    keras.Model(inputs, outputs).save(folder / "model.keras")
    card = marco_card()
    card.add_artifact("keras", folder, "model.keras")
    prep = MarcoPreprocessing(SIZE)
    checks = np.stack([prep.np_from_bytes(jpeg_bytes(96, 80, seed=s)) for s in range(8)])
    export_model(card, folder, "tflite-int8", checks, min_agreement=0.0)
    return ModelCard.load(folder), folder


def test_export_writes_the_graph_and_the_runner_uses_it(exported) -> None:
    card, folder = exported
    assert lite_preprocessing.FORMAT in card.artifacts
    runner = open_runner(card, folder, "tflite-int8")
    assert runner.lite_preprocess is not None
    keras_runner = open_runner(card, folder, "keras")
    for seed in range(3):
        data = jpeg_bytes(120, 90, seed=seed)
        ours = runner.preprocess(data)
        assert np.abs(ours - keras_runner.preprocess(data)).max() <= 1e-6
        assert np.abs(ours - runner.preprocessing.np_from_bytes(data)).max() <= 1e-6


def test_a_changed_graph_fails_the_checksum(exported, tmp_path: Path) -> None:
    card, folder = exported
    copy = tmp_path / "copy"
    copy.mkdir()
    for artifact in card.artifacts.values():
        (copy / artifact.file).write_bytes((folder / artifact.file).read_bytes())
    (copy / lite_preprocessing.FILE).write_bytes(
        lite_preprocessing.build(MarcoPreprocessing(SIZE + 1))
    )
    with pytest.raises(CardError, match=r"litert-preprocess artifact .* fails its sha256"):
        open_runner(card, copy, "tflite-int8")
    open_runner(card, copy, "keras")  # a Keras run does not read the graph


def test_the_graph_runs_without_tensorflow(exported, tmp_path: Path) -> None:
    _, folder = exported
    image = tmp_path / "one.jpg"
    image.write_bytes(jpeg_bytes(100, 70, seed=9))
    _, report = litert_in_fresh_python(folder, "tflite-int8", image)
    assert (report["graph"], report["tf"], report["keras"]) == (True, False, False)
    assert report["input"] == [1, SIZE, SIZE, 3]
