"""The steps after the crop, as a small LiteRT graph that travels with a model's TFLite files.

For `marco` (scale to [0, 1], the TF1 bilinear resize, (x - 0.5) * 2) LiteRT's XNNPACK runs
these steps in about half the time of the numpy twin, with the same float32 values (both
reproduce TensorFlow's; tests/test_lite_preprocessing.py compares them). The graph is
built with TensorFlow when a model is exported to TFLite (`add_to`) and listed in its card
as the artifact `litert-preprocess`, so an imager PC without TensorFlow gets it with the
model; `LiteRTRunner` uses it when the card lists it. Decoding and cropping stay in numpy.
Preprocessings without `tf_from_squares` (`merck_gray`: its area resize is no XNNPACK op)
have no graph and keep the numpy path.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from marco_svc.nets import silenced_stderr
from marco_svc.nets.card import ModelCard
from marco_svc.nets.preprocessing import Preprocessing, central_square_np

FORMAT = "litert-preprocess"
FILE = "preprocess.tflite"
SIGNATURE = "preprocess"


def build(prep: Preprocessing) -> bytes | None:
    """The graph's flatbuffer (needs TensorFlow), or None where `prep` has no such graph."""
    if not hasattr(prep, "tf_from_squares"):
        return None
    import tensorflow as tf

    spec = tf.TensorSpec([1, None, None, prep.channels], tf.uint8, name="squares")
    function = tf.function(lambda squares: {"image": prep.tf_from_squares(squares)})
    module = tf.Module()
    module.preprocess = function.get_concrete_function(spec)
    with tempfile.TemporaryDirectory(prefix="marco-preprocess-") as tmp:
        tf.saved_model.save(module, tmp, signatures={SIGNATURE: module.preprocess})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=[SIGNATURE])
        return converter.convert()


def add_to(card: ModelCard, folder: Path) -> bool:
    """Write the graph of the card's preprocessing into the folder and list it in the card
    (not saved here); False where that preprocessing has none."""
    from marco_svc.nets.preprocessing import from_spec

    flatbuffer = build(from_spec(card.preprocessing))
    if flatbuffer is None:
        return False
    (folder / FILE).write_bytes(flatbuffer)
    card.add_artifact(FORMAT, folder, FILE)
    return True


class LitePreprocessor:
    """Decoded (H, W, 3) uint8 pixels -> network input, through the graph at `path`."""

    def __init__(self, path: Path, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        with silenced_stderr():
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.signature = self.interpreter.get_signature_runner(SIGNATURE)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        square = np.ascontiguousarray(central_square_np(pixels))[np.newaxis]
        return self.signature(squares=square)["image"][0]  # GetTensor hands back a copy
