"""Load a registered model by its card and run it: {scheme: probabilities} per batch.

`keras` artifacts run through TensorFlow with the TensorFlow preprocessing; `tflite-*`
artifacts run through LiteRT (`ai_edge_litert`) with the numpy/Pillow preprocessing, and
that path never imports TensorFlow, so it works on an imager PC with the `edge` extra only.
"""

from __future__ import annotations

import functools
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from marco_svc.labels import MARCO4, MERCK10
from marco_svc.nets import lite_preprocessing, silenced_stderr
from marco_svc.nets.card import CardError, ModelCard
from marco_svc.nets.lite_preprocessing import LitePreprocessor
from marco_svc.nets.preprocessing import Preprocessing, from_spec

FORMAT_PREFERENCE = ("keras", "tflite-fp32", "tflite-fp16", "tflite-int8")


class Runner(ABC):
    """A loaded model: `preprocess` one encoded image, `predict` a batch of inputs."""

    fmt: str

    def __init__(self, card: ModelCard, folder: Path) -> None:
        self.card, self.folder = card, folder
        self.preprocessing: Preprocessing = from_spec(card.preprocessing)
        if self.preprocessing.input_size != card.input_size or (
            self.preprocessing.channels != card.channels
        ):
            raise CardError(
                f"{card.ref}: preprocessing {card.preprocessing} gives "
                f"{self.preprocessing.input_shape}, the card says {card.input_size}x"
                f"{card.channels}"
            )

    @property
    def path(self) -> Path:
        return self.folder / self.card.artifacts[self.fmt].file

    @abstractmethod
    def preprocess(self, data: bytes) -> np.ndarray:
        """Encoded image -> (H, W, C) float32 network input."""

    @abstractmethod
    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """(N, H, W, C) inputs -> {scheme: (N, labels) probabilities}, for the card's heads."""

    def label_probabilities(self, outputs: Mapping[str, np.ndarray]) -> list[dict[str, float]]:
        return label_probabilities(self.card, outputs)


class KerasRunner(Runner):
    fmt = "keras"

    def __init__(self, card: ModelCard, folder: Path) -> None:
        super().__init__(card, folder)
        import tensorflow as tf

        self.model = serving_model(load_keras(self.path), list(card.heads))
        self._preprocess = tf.function(
            self.preprocessing.tf_from_bytes, input_signature=[tf.TensorSpec([], tf.string)]
        )
        self._forward = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)

    def preprocess(self, data: bytes) -> np.ndarray:
        return self._preprocess(data).numpy()

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self._forward(np.asarray(batch, dtype=np.float32))
        return {scheme: np.asarray(outputs[scheme]) for scheme in self.card.heads}


class LiteRTRunner(Runner):
    """A TFLite artifact through ai_edge_litert's Interpreter; no TensorFlow.

    Integer-quantized inputs and outputs (a full-int8 export) are quantized and dequantized
    here with the tensors' own scale and zero point, so `predict` always speaks float32.
    """

    def __init__(self, card: ModelCard, folder: Path, fmt: str, threads: int | None = None):
        self.fmt = fmt
        super().__init__(card, folder)
        from ai_edge_litert.interpreter import Interpreter

        with silenced_stderr():  # LiteRT prints an INFO line when it applies XNNPACK
            self.interpreter = Interpreter(
                model_path=str(self.path), num_threads=threads or os.cpu_count() or 1
            )
            self.signature = self.interpreter.get_signature_runner()
            ((self.input_name, self.input_details),) = self.signature.get_input_details().items()
            self.output_details = self.signature.get_output_details()
            missing = set(card.heads) - set(self.output_details)
            if missing:
                raise CardError(f"{card.ref}: {self.path.name} has no output {sorted(missing)}")
            # XNNPACK is applied, with its INFO line, on the first run: warm up in here.
            self.predict(np.zeros((1, *self.preprocessing.input_shape), dtype=np.float32))
        self.lite_preprocess: LitePreprocessor | None = None
        if lite_preprocessing.FORMAT in card.artifacts:
            graph = folder / card.artifacts[lite_preprocessing.FORMAT].file
            self.lite_preprocess = LitePreprocessor(graph, threads or os.cpu_count() or 1)

    def preprocess(self, data: bytes) -> np.ndarray:
        """The numpy preprocessing, with its steps after the crop through the model's
        LiteRT preprocessing graph when it has one (`lite_preprocessing`)."""
        if self.lite_preprocess is None:
            return self.preprocessing.np_from_bytes(data)
        return self.lite_preprocess(self.preprocessing.decode_for_input(data))

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        x = _quantize(np.asarray(batch, dtype=np.float32), self.input_details)
        outputs = self.signature(**{self.input_name: x})
        # copies (dequantized): the outputs may point into the interpreter's buffers
        return {
            scheme: _dequantize(outputs[scheme], self.output_details[scheme])
            for scheme in self.card.heads
        }


def _quantize(x: np.ndarray, details: Mapping[str, Any]) -> np.ndarray:
    dtype = np.dtype(details["dtype"])
    if dtype == np.float32:
        return x
    scale, zero_point = details["quantization"]
    info = np.iinfo(dtype)
    scaled = np.divide(x, np.float32(scale))  # the one temporary; the rest is in place
    scaled += np.float32(zero_point)
    np.rint(scaled, out=scaled)
    np.clip(scaled, info.min, info.max, out=scaled)
    return scaled.astype(dtype)


def _dequantize(y: np.ndarray, details: Mapping[str, Any]) -> np.ndarray:
    if np.dtype(details["dtype"]) == np.float32:
        return np.array(y, dtype=np.float32)
    scale, zero_point = details["quantization"]
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)


def choose_format(card: ModelCard, fmt: str | None = None) -> str:
    """`fmt` if the model has it, else the first of keras (when TensorFlow is installed)
    and the TFLite formats that the model has."""
    if fmt is None:
        usable = [f for f in FORMAT_PREFERENCE if f in card.artifacts]
        if "keras" in usable and not _tensorflow_installed():
            usable.remove("keras")
        if not usable:
            have = ", ".join(card.artifacts) or "none"
            raise CardError(f"{card.ref} has no artifact this install can run (it has: {have})")
        return usable[0]
    if fmt not in FORMAT_PREFERENCE:
        raise CardError(f"cannot run a {fmt} artifact (runnable: {', '.join(FORMAT_PREFERENCE)})")
    if fmt not in card.artifacts:
        raise CardError(f"{card.ref} has no {fmt} artifact (it has: {', '.join(card.artifacts)})")
    return fmt


def open_runner(
    card: ModelCard,
    folder: Path,
    fmt: str | None = None,
    verify: bool = True,
    threads: int | None = None,
) -> Runner:
    """A runner for one artifact of the model (see `choose_format`); `verify` checks its
    sha256; `threads` caps the CPU threads of a model call (None: every core)."""
    fmt = choose_format(card, fmt)
    if verify:
        checked = [fmt]
        if fmt != "keras" and lite_preprocessing.FORMAT in card.artifacts:
            checked.append(lite_preprocessing.FORMAT)
        card.verify(folder, checked)
    if fmt == "keras":
        if threads:
            limit_tensorflow_threads(threads)
        return KerasRunner(card, folder)
    return LiteRTRunner(card, folder, fmt, threads)


def limit_tensorflow_threads(threads: int) -> None:
    """Cap TensorFlow's thread pools, if it has not started them yet (then they stay)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already initialised in this process
        pass


def load_keras(path: Path) -> Any:
    """The Keras network stored at `path`, loaded once per process and shared by every user
    (runners, heatmaps): the current and the previous model version stay in memory. A file
    rewritten in place (new size or mtime) is loaded again."""
    info = Path(path).stat()
    return _load_keras(str(path), info.st_mtime_ns, info.st_size)


@functools.lru_cache(maxsize=2)
def _load_keras(path: str, _mtime_ns: int, _size: int) -> Any:
    import keras

    import marco_svc.nets.resnet_cifar  # noqa: F401 - registers the custom layer and loss

    return keras.saving.load_model(path, compile=False)


def _tensorflow_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def serving_model(model: Any, heads: Sequence[str]) -> Any:
    """The sub-model with only the probability outputs of `heads` (no logits, no aux head)."""
    import keras

    outputs = {scheme: model.get_layer(scheme).output for scheme in heads}
    return keras.Model(model.input, outputs, name=f"{model.name}_serving")


def label_probabilities(
    card: ModelCard, outputs: Mapping[str, np.ndarray]
) -> list[dict[str, float]]:
    """{scheme: (N, k)} -> per image {label: probability} over all heads (labels are unique)."""
    count = len(next(iter(outputs.values())))
    rows: list[dict[str, float]] = [{} for _ in range(count)]
    for scheme, labels in card.heads.items():
        for row, vector in zip(rows, np.asarray(outputs[scheme]), strict=True):
            row.update(zip(labels, (float(p) for p in vector), strict=True))
    return rows


def top_label(card: ModelCard, probabilities: Mapping[str, float]) -> str:
    """The most probable label of the finest head (ten-way when the model has it)."""
    scheme = MERCK10 if MERCK10 in card.heads else MARCO4
    return max(card.heads[scheme], key=lambda label: probabilities[label])
