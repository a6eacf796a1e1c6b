"""Average pools as depthwise convolutions: the same function in float, all-XNNPACK in int8."""

from __future__ import annotations

from collections import Counter

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from marco_svc.nets import silenced_stderr
from marco_svc.train.export import convert
from marco_svc.train.pool_rewrite import PoolAsDepthwise, lite_friendly

POOLS = [
    ((3, 3), (1, 1), "same"),  # the Inception branch pool: border taps rescaled
    ((2, 2), (2, 2), "same"),  # the ResNet shortcut on an odd size: padding at the end
    ((3, 2), (2, 2), "valid"),  # no padding, unequal sides
]


def pooled_model() -> keras.Model:
    inputs = keras.Input((15, 17, 4), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    branches = [
        keras.layers.AveragePooling2D(size, stride, padding, name=f"pool{i}")(x)
        for i, (size, stride, padding) in enumerate(POOLS)
    ]
    pooled = [keras.layers.GlobalAveragePooling2D()(b) for b in branches]
    x = keras.layers.Concatenate()(pooled)
    logits = keras.layers.Dense(4, name="logits")(x)
    return keras.Model(inputs, {"marco4": keras.layers.Softmax(name="marco4")(logits)})


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(3)
    return pooled_model()


def test_rewritten_pools_compute_the_same_function(model: keras.Model) -> None:
    lite = lite_friendly(model)
    assert not any(isinstance(layer, keras.layers.AveragePooling2D) for layer in lite.layers)
    assert lite.get_layer("conv") is model.get_layer("conv")  # other layers are shared
    x = np.random.default_rng(0).normal(size=(3, 15, 17, 4)).astype(np.float32)
    for index in range(len(POOLS)):
        name = f"pool{index}"
        want = keras.Model(model.input, model.get_layer(name).output)(x).numpy()
        got = keras.Model(lite.input, lite.get_layer(name).output)(x).numpy()
        assert isinstance(lite.get_layer(name), PoolAsDepthwise)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The 3x3 SAME pool's corner divides by 4 taps, not 9: a plain 1/9 kernel would fail.
    assert lite.get_layer("pool0").border[0, 0, 0, 0] == pytest.approx(9 / 4 - 1)
    assert lite.get_layer("pool2").border is None


def test_a_model_without_average_pools_is_returned_as_is() -> None:
    inputs = keras.Input((8, 8, 1))
    plain = keras.Model(inputs, keras.layers.MaxPooling2D()(inputs))
    assert lite_friendly(plain) is plain


def test_int8_export_runs_whole_in_xnnpack(model: keras.Model) -> None:
    rng = np.random.default_rng(1)
    calibration = [rng.uniform(-1, 1, (15, 17, 4)).astype(np.float32) for _ in range(16)]
    flatbuffer = convert(model, "tflite-int8", calibration)
    with silenced_stderr():
        interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
        interpreter.allocate_tensors()
    # Nodes that XNNPACK took are listed too; DELEGATE counts the pieces it runs.
    ops = Counter(op["op_name"] for op in interpreter._get_ops_details())
    assert "AVERAGE_POOL_2D" not in ops
    assert ops["DEPTHWISE_CONV_2D"] == len(POOLS)
    assert ops["DELEGATE"] == 1
    # ...and it still computes the model: int8 probabilities near the float ones.
    run = interpreter.get_signature_runner()
    ((name, details),) = run.get_input_details().items()
    scale, zero = details["quantization"]
    x = np.stack(calibration[:4])
    q = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
    out = run(**{name: q})["marco4"]
    out_scale, out_zero = run.get_output_details()["marco4"]["quantization"]
    got = (out.astype(np.float32) - out_zero) * out_scale
    want = model(x)["marco4"].numpy()
    assert np.abs(got - want).max() < 0.05


def test_a_pool_with_unequal_strides_is_kept() -> None:
    """TensorFlow's depthwise kernel without oneDNN refuses unequal strides: keep the pool."""
    inputs = keras.Input((15, 17, 2))
    pooled = keras.layers.AveragePooling2D((3, 2), (2, 3), "valid", name="uneven")(inputs)
    lite = lite_friendly(keras.Model(inputs, pooled))
    assert isinstance(lite.get_layer("uneven"), keras.layers.AveragePooling2D)


def test_a_same_pool_on_a_dynamic_size_is_kept() -> None:
    inputs = keras.Input((None, None, 2))
    same = keras.layers.AveragePooling2D(3, 1, "same", name="same")(inputs)
    valid = keras.layers.AveragePooling2D(2, 2, "valid", name="valid")(inputs)
    lite = lite_friendly(keras.Model(inputs, [same, valid]))
    assert isinstance(lite.get_layer("same"), keras.layers.AveragePooling2D)
    assert isinstance(lite.get_layer("valid"), PoolAsDepthwise)
    x = np.random.default_rng(2).normal(size=(1, 9, 7, 2)).astype(np.float32)
    np.testing.assert_allclose(lite(x)[1], keras.layers.AveragePooling2D(2, 2)(x), atol=1e-6)
