"""int8 exports with a float stem: the ops that read the image stay float32, the rest int8."""

from __future__ import annotations

import keras
import numpy as np
from ai_edge_litert.interpreter import Interpreter

from marco_svc.nets import silenced_stderr
from marco_svc.train.export import convert
from tests.test_pool_rewrite import pooled_model


def _filters(interpreter: Interpreter) -> list[np.dtype]:
    """The dtype of each convolution's filter tensor, in graph order."""
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    return [
        np.dtype(tensors[op["inputs"][1]]["dtype"])
        for op in interpreter._get_ops_details()
        if op["op_name"] in {"CONV_2D", "DEPTHWISE_CONV_2D"}
    ]


def test_the_stem_stays_float_and_the_rest_is_int8() -> None:
    keras.utils.set_random_seed(5)
    model = pooled_model()
    rng = np.random.default_rng(4)
    calibration = [rng.uniform(-1, 1, (15, 17, 4)).astype(np.float32) for _ in range(16)]
    with silenced_stderr():
        interpreter = Interpreter(model_content=convert(model, "tflite-int8", calibration, True))
        interpreter.allocate_tensors()
    filters = _filters(interpreter)
    assert filters[0] == np.float32  # the stem convolution reads the float image
    assert filters[1:] and all(dtype == np.int8 for dtype in filters[1:])
    run = interpreter.get_signature_runner()
    ((name, details),) = run.get_input_details().items()
    assert np.dtype(details["dtype"]) == np.float32
    x = np.stack(calibration[:4])
    got = run(**{name: x})["marco4"]
    assert got.dtype == np.float32
    assert np.abs(got - model(x)["marco4"].numpy()).max() < 0.05


def test_without_a_float_stem_every_filter_is_int8() -> None:
    keras.utils.set_random_seed(5)
    calibration = [np.zeros((15, 17, 4), np.float32) + 0.5]
    with silenced_stderr():
        interpreter = Interpreter(model_content=convert(pooled_model(), "tflite-int8", calibration))
    assert all(dtype == np.int8 for dtype in _filters(interpreter))
