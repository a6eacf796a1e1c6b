"""SmoothGrad saliency (Smilkov et al. 2017), as MARCO shows in its Fig. 4.

n noisy copies of the model input (Gaussian noise, sigma a fraction of the input's
value range), run in batches; the gradient of the chosen class score (its logit when
the model exposes one, else its log-probability) with respect to the input; absolute
value, maximum over channels, mean over the copies. The map lives in model-input
coordinates; `overlay` paints it as a colour map on a grey copy of that input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True)
class SmoothGradParams:
    n: int = 50
    sigma_fraction: float = 0.15
    batch_size: int = 10
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _softmax_layer(model: Any, output: str) -> Any:
    """The output's layer when it applies softmax itself, so its logits are recoverable:
    a softmax Dense layer (logits = features @ kernel + bias) or a softmax Activation
    layer (logits = its input); None otherwise."""
    import keras

    try:
        layer = model.get_layer(output)
    except ValueError:
        return None
    if getattr(layer, "activation", None) is not keras.activations.softmax:
        return None
    return layer if isinstance(layer, keras.layers.Dense | keras.layers.Activation) else None


def _score_fn(model: Any, output: str, class_index: int) -> Any:
    """A function of an input batch giving the class score (the logit) per example.

    The logit comes from a `<output>_logits` output (MARCO), or from the input of a softmax
    output layer (see `_softmax_layer`); otherwise it is the log-probability.
    """
    import keras
    import tensorflow as tf

    named_logits = f"{output}_logits" in getattr(model, "output_names", [])
    head = None if named_logits else _softmax_layer(model, output)
    features = keras.Model(model.input, head.input) if head is not None else None
    dense = isinstance(head, keras.layers.Dense)

    def score(batch: Any) -> Any:
        if features is not None:
            values = features(batch, training=False)
            if dense:
                values = tf.matmul(values, head.kernel) + head.bias
            return values[:, class_index]
        outputs = model(batch, training=False)
        if isinstance(outputs, dict):
            logits = outputs.get(f"{output}_logits")
            values = logits if logits is not None else tf.math.log(outputs[output] + 1e-12)
        else:
            values = tf.math.log(outputs + 1e-12)
        return values[:, class_index]

    return score


_COMPILED: dict[tuple[int, str, int], Any] = {}


def _gradient_fn(model: Any, output: str, class_index: int) -> Any:
    """A compiled batch -> (N, H, W) |gradient| max over channels, cached per model and class."""
    import tensorflow as tf

    key = (id(model), output, class_index)
    if key not in _COMPILED:
        score = _score_fn(model, output, class_index)

        @tf.function(reduce_retracing=True)
        def gradients(batch: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                tape.watch(batch)
                total = tf.reduce_sum(score(batch))
            return tf.reduce_max(tf.abs(tape.gradient(total, batch)), axis=-1)

        if len(_COMPILED) >= 8:  # keep a few (model, class) graphs, drop the oldest
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[key] = gradients
    return _COMPILED[key]


def smoothgrad(
    model: Any,
    x: np.ndarray,
    output: str,
    class_index: int,
    params: SmoothGradParams | None = None,
) -> np.ndarray:
    """The (H, W) SmoothGrad map of one preprocessed input `x` (H, W, C)."""
    import tensorflow as tf

    params = params or SmoothGradParams()
    rng = np.random.default_rng(params.seed)
    x = np.asarray(x, dtype=np.float32)
    sigma = params.sigma_fraction * float(x.max() - x.min() or 1.0)
    gradients = _gradient_fn(model, output, class_index)
    total = np.zeros(x.shape[:2], dtype=np.float64)
    done = 0
    while done < params.n:
        size = min(params.batch_size, params.n - done)
        noise = rng.normal(0.0, sigma, size=(size, *x.shape)).astype(np.float32)
        total += gradients(tf.constant(x[None] + noise)).numpy().sum(axis=0)
        done += size
    return (total / params.n).astype(np.float32)


def normalise(heatmap: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """Scale to [0, 1], clipping at a high percentile so a few pixels do not dominate."""
    top = float(np.percentile(heatmap, percentile)) or float(heatmap.max()) or 1.0
    return np.clip(heatmap / top, 0.0, 1.0)


def overlay(heatmap: np.ndarray, grey: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """An RGB uint8 picture: the normalised map as a colour map over a grey image."""
    if grey.shape[:2] != heatmap.shape:
        grey = cv2.resize(grey, heatmap.shape[::-1], interpolation=cv2.INTER_AREA)
    if grey.ndim == 3:
        grey = cv2.cvtColor(grey, cv2.COLOR_RGB2GRAY)
    levels = (normalise(heatmap) * 255).astype(np.uint8)
    colours = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    base = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB).astype(np.float32)
    weight = alpha * (levels.astype(np.float32)[..., None] / 255.0) + 0.15
    mixed = base * (1 - weight) + colours.astype(np.float32) * weight
    return np.clip(mixed, 0, 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode the heatmap as PNG")
    return encoded.tobytes()


def grown_box(
    box: tuple[float, float, float, float], size: int, factor: float = 0.5, least: float = 6.0
) -> tuple[int, int, int, int]:
    """A box (x0, y0, x1, y1) grown by `factor` of its size on every side (at least `least`
    pixels), in whole pixels, clipped to a size x size map: the region a heatmap should hit."""
    x0, y0, x1, y1 = box
    grow_x, grow_y = max((x1 - x0) * factor, least), max((y1 - y0) * factor, least)
    return (
        max(int(np.floor(x0 - grow_x)), 0),
        max(int(np.floor(y0 - grow_y)), 0),
        min(int(np.ceil(x1 + grow_x)), size),
        min(int(np.ceil(y1 + grow_y)), size),
    )


def mass_inside(heatmap: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Fraction of the map's total mass inside the box (x0, y0, x1, y1), ends exclusive."""
    x0, y0, x1, y1 = box
    total = float(heatmap.sum())
    return float(heatmap[max(y0, 0) : y1, max(x0, 0) : x1].sum()) / total if total else 0.0
