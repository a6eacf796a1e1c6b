"""Export a Keras model to TFLite (fp32, fp16, full-integer int8) and check the export.

The TFLite file has one signature whose outputs are named by scheme (`marco4`, `merck10`),
which is what `LiteRTRunner` reads. int8 is full-integer (int8 input and output too,
unless `float_stem`) calibrated on a representative set of preprocessed inputs; its average
pools become depthwise convolutions first (`pool_rewrite`), so LiteRT's XNNPACK runs the
whole graph.
With `float_stem` the ops that read the image stay float32 (float input, quantized after
the first layer): on one-channel drop images the stem's int8 input rounding was the
largest error in the graph (its output off by 0.74 quantization steps), enough to flip
near-tied top-1 calls.
The first TFLite export also writes the preprocessing's LiteRT graph (`lite_preprocessing`).
Every export is run through LiteRT on validation inputs and compared with its Keras model:
top-1 agreement per head and the largest probability difference. Below `min_agreement` the
export is refused and nothing is written; otherwise the file joins the model folder and the
figures go into the model card's `exports`.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from marco_svc.nets import lite_preprocessing, silenced_stderr
from marco_svc.nets.card import ModelCard
from marco_svc.nets.runner import KerasRunner, LiteRTRunner

FILES = {
    "tflite-fp32": "model-fp32.tflite",
    "tflite-fp16": "model-fp16.tflite",
    "tflite-int8": "model-int8.tflite",
}
FORMATS = tuple(FILES)
CALIBRATION_IMAGES = 200


class ExportRefused(RuntimeError):
    """An export that disagrees with its Keras model too often."""


def convert(
    serving: Any, fmt: str, representative: Sequence[np.ndarray], float_stem: bool = False
) -> bytes:
    """The TFLite flatbuffer of a serving model ({scheme: probabilities} outputs);
    `float_stem` (int8 only): the ops that read the input stay float32."""
    import keras
    import tensorflow as tf

    from marco_svc.train.pool_rewrite import lite_friendly

    if fmt not in FILES:
        raise ValueError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    if fmt == "tflite-int8":
        serving = lite_friendly(serving)
    shape = [None, *serving.input_shape[1:]]
    archive = keras.export.ExportArchive()
    archive.track(serving)
    archive.add_endpoint(
        "serve",
        lambda image: dict(serving(image, training=False)),
        input_signature=[tf.TensorSpec(shape, tf.float32, name="image")],
    )
    with tempfile.TemporaryDirectory(prefix="marco-export-") as tmp:
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["serve"])
        if fmt == "tflite-fp16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif fmt == "tflite-int8":
            if not len(representative):
                raise ValueError("an int8 export needs representative inputs")
            calibration = list(representative)[:CALIBRATION_IMAGES]
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([x[None]] for x in calibration)
            if float_stem:
                return _int8_after_the_stem(converter, calibration)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        return converter.convert()


def _int8_after_the_stem(converter: Any, calibration: list[np.ndarray]) -> bytes:
    """int8 except the ops that read the input (TensorFlow's selective quantization)."""
    import tensorflow as tf

    converter.optimizations = []
    stem = _stem_outputs(converter.convert())  # the float graph, to name its stem
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=stem)
    with warnings.catch_warnings():  # the debugger opens TensorFlow's (deprecated) interpreter
        warnings.filterwarnings("ignore", r"\s*Warning: tf.lite.Interpreter is deprecated")
        selective = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=lambda: ([x[None]] for x in calibration[:1]),
            debug_options=options,
        )
        return selective.get_nondebug_quantized_model()


def _stem_outputs(flatbuffer: bytes) -> list[str]:
    """Names of the output tensors of the ops that read the graph's input."""
    from ai_edge_litert.interpreter import Interpreter

    with silenced_stderr():
        interpreter = Interpreter(model_content=flatbuffer)
    (image,) = interpreter.get_input_details()
    tensors = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    return [
        tensors[index]
        for op in interpreter._get_ops_details()
        if image["index"] in op["inputs"]
        for index in op["outputs"]
    ]


def compare(
    card: ModelCard, folder: Path, fmt: str, inputs: np.ndarray, batch_size: int = 32
) -> dict[str, Any]:
    """Top-1 agreement and max probability difference of an artifact vs the Keras model."""
    reference = KerasRunner(card, folder)
    candidate = LiteRTRunner(card, folder, fmt, threads=None)
    figures: dict[str, Any] = {"images": len(inputs)}
    agree: dict[str, list[np.ndarray]] = {scheme: [] for scheme in card.heads}
    diff = 0.0
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        want, got = reference.predict(batch), candidate.predict(batch)
        for scheme in card.heads:
            agree[scheme].append(want[scheme].argmax(1) == got[scheme].argmax(1))
            diff = max(diff, float(np.abs(want[scheme] - got[scheme]).max()))
    figures["top1_agreement"] = {s: float(np.concatenate(a).mean()) for s, a in agree.items()}
    figures["max_probability_difference"] = diff
    return figures


def export_model(
    card: ModelCard,
    folder: Path,
    fmt: str,
    check_inputs: np.ndarray,
    min_agreement: float = 0.99,
    calibration: Sequence[np.ndarray] | None = None,
    float_stem: bool = False,
) -> dict[str, Any]:
    """Convert the folder's Keras model, check it, and add it to the folder and card
    (`float_stem`: see `convert`)."""
    import keras

    from marco_svc.nets.runner import serving_model

    if "keras" not in card.artifacts:
        raise ExportRefused(f"{card.ref} has no Keras artifact to export from")
    if not len(check_inputs):
        raise ExportRefused("no validation images to check the export against")
    import marco_svc.nets.resnet_cifar  # noqa: F401 - custom layers

    model = keras.saving.load_model(folder / card.artifacts["keras"].file, compile=False)
    serving = serving_model(model, list(card.heads))
    representative = calibration if calibration is not None else check_inputs
    float_stem = float_stem and fmt == "tflite-int8"
    flatbuffer = convert(serving, fmt, representative, float_stem)
    target = folder / FILES[fmt]
    staged = folder / f".{FILES[fmt]}.new"
    staged.write_bytes(flatbuffer)
    trial = ModelCard.from_dict(card.to_dict())
    trial.add_artifact(fmt, folder, staged.name)
    try:
        figures = compare(trial, folder, fmt, np.asarray(check_inputs, dtype=np.float32))
    except Exception:
        staged.unlink(missing_ok=True)
        raise
    worst = min(figures["top1_agreement"].values())
    if worst < min_agreement:
        staged.unlink(missing_ok=True)
        raise ExportRefused(
            f"{fmt} export of {card.ref} agrees with the Keras model on {worst:.1%} of "
            f"{figures['images']} validation images (needs {min_agreement:.0%}); not written"
        )
    staged.replace(target)
    card.add_artifact(fmt, folder, FILES[fmt])
    if lite_preprocessing.FORMAT not in card.artifacts:
        lite_preprocessing.add_to(card, folder)
    figures["bytes"] = target.stat().st_size
    if float_stem:
        figures["float_stem"] = True
    card.exports[fmt] = figures
    card.save(folder)
    return figures
