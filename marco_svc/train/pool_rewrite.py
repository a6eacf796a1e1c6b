"""Average pooling rewritten as depthwise convolution, for int8 TFLite exports.

LiteRT's CPU engine (XNNPACK) has no int8 average pooling: every int8 AVERAGE_POOL_2D runs
on the builtin kernel outside the delegate, and each one splits the delegated graph (the
MARCO Inception-v3 has ten, so its int8 graph ran in eleven XNNPACK pieces). A k x k average
pool is a depthwise convolution with weights 1/k^2, which XNNPACK does run. With SAME
padding TensorFlow divides by the taps that fall inside the image, so outputs near the
border are rescaled by the constant map k^2 / taps; it is applied as y + y * (map - 1),
which is exactly zero inside, so the int8 interior is not touched by the map's rounding.

`lite_friendly(model)` returns a copy of a Keras model with every AveragePooling2D replaced
(other layers are shared, not copied); in float32 it computes the same function.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np


class PoolAsDepthwise(keras.layers.Layer):
    """`AveragePooling2D` (channels last) as a fixed depthwise convolution."""

    def __init__(
        self, pool_size: tuple[int, int], strides: tuple[int, int], padding: str, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.pool_size, self.strides, self.padding = tuple(pool_size), tuple(strides), padding
        self.kernel: np.ndarray | None = None
        self.border: np.ndarray | None = None

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        height, width, channels = input_shape[1:]
        taps = self.pool_size[0] * self.pool_size[1]
        self.kernel = np.full((*self.pool_size, channels, 1), 1.0 / taps, dtype=np.float32)
        if self.padding == "same":
            if height is None or width is None:
                raise ValueError(f"{self.name}: SAME average pooling needs a static input size")
            rows = _taps_inside(height, self.pool_size[0], self.strides[0])
            cols = _taps_inside(width, self.pool_size[1], self.strides[1])
            scale = taps / np.outer(rows, cols)
            if np.any(scale != 1.0):  # no padding at all: nothing to rescale
                self.border = (scale - 1.0).astype(np.float32)[None, :, :, None]
        super().build(input_shape)

    def call(self, x: Any) -> Any:
        y = keras.ops.depthwise_conv(x, self.kernel, self.strides, self.padding)
        if self.border is not None:
            y = y + y * self.border
        return y

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return keras.ops.average_pool(
            keras.KerasTensor(input_shape), self.pool_size, self.strides, self.padding
        ).shape


def _taps_inside(size: int, kernel: int, stride: int) -> np.ndarray:
    """Per output position of a SAME window along one axis: how many taps lie in the input."""
    out = -(-size // stride)
    pad_before = max((out - 1) * stride + kernel - size, 0) // 2
    starts = np.arange(out) * stride - pad_before
    return np.minimum(starts + kernel, size) - np.maximum(starts, 0)


def _rewritable(layer: keras.layers.AveragePooling2D) -> bool:
    """Channels last, equal strides, and a static size where SAME padding needs the border
    map. TensorFlow's own depthwise kernel, used when oneDNN is off (TF_ENABLE_ONEDNN_OPTS=0,
    or a CPU on which TensorFlow does not turn it on), refuses unequal strides."""
    if layer.data_format != "channels_last" or len(set(layer.strides)) != 1:
        return False
    return layer.padding != "same" or None not in tuple(layer.input.shape)[1:3]


def lite_friendly(model: keras.Model) -> keras.Model:
    """`model` with its AveragePooling2D layers as depthwise convolutions (itself if none);
    a pool that cannot be rewritten (channels first, unequal strides, SAME on a dynamic
    size) is kept."""
    if not any(isinstance(layer, keras.layers.AveragePooling2D) for layer in model.layers):
        return model

    def swap(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, keras.layers.AveragePooling2D) and _rewritable(layer):
            return PoolAsDepthwise(layer.pool_size, layer.strides, layer.padding, name=layer.name)
        return layer

    return keras.models.clone_model(model, clone_function=swap)
