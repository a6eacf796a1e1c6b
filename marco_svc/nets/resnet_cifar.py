"""The ten-way networks of Ghafurian et al.: CIFAR-style ResNet-32 and ResNet-56, in Keras 3.

As in TFLearn's `residual_block` (their implementation) and its CIFAR-10 example:

- a 3x3 16-filter convolution, then 3 stages of n basic blocks with 16, 32 and 64 filters
  (depth 6n + 2: n = 5 for ResNet-32, n = 9 for ResNet-56); the first block of stages 2
  and 3 halves the resolution with a stride-2 convolution;
- full pre-activation blocks: BN -> ReLU -> conv3x3 -> BN -> ReLU -> conv3x3, plus the
  shortcut; where the shape changes the shortcut is a 2x2 average pool and zero-padded
  channels ((out - in) // 2 on each side), with no parameters ("option A");
- convolutions with bias, He-normal initialisation and L2 weight decay 1e-4 (TFLearn's
  `weight_decay * sum(w^2) / 2`); BatchNorm epsilon 1e-5, decay 0.9, with scale;
- a final BN -> ReLU -> global average pool -> softmax head per label scheme.

Input: the `merck_gray` preprocessing (128x128x1). `heads=(MERCK10,)` is the paper's
network; `heads=(MARCO4, MERCK10)` is the two-head variant: one shared trunk, a four-way
and a ten-way head, trained with `MaskedSparseCategoricalCrossentropy` per head so an image
labelled in one scheme only teaches that head (`two_head_targets` derives the four-way
label of a ten-way label through the one mapping in `marco_svc.labels`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from marco_svc.labels import MARCO4, MARCO4_LABELS, MERCK10, MERCK10_LABELS, TEN_TO_FOUR, labels_of

MISSING = -1  # the target of a head for which an image has no label
WEIGHT_DECAY = 1e-4
BLOCKS = {32: 5, 56: 9}
FILTERS = (16, 32, 64)


@keras.saving.register_keras_serializable(package="marco_svc")
class ChannelPad(layers.Layer):
    """Zero-pad the channel axis: the parameter-free projection of TFLearn's shortcut."""

    def __init__(self, before: int, after: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.before, self.after = before, after

    def call(self, x: Any) -> Any:
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [self.before, self.after]])

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        *rest, channels = input_shape
        return (*rest, None if channels is None else channels + self.before + self.after)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "before": self.before, "after": self.after}


def _conv(filters: int, stride: int, name: str) -> layers.Conv2D:
    return layers.Conv2D(
        filters,
        3,
        strides=stride,
        padding="same",
        use_bias=True,
        kernel_initializer="he_normal",
        kernel_regularizer=keras.regularizers.L2(WEIGHT_DECAY / 2),
        name=name,
    )


def _bn(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def _block(x: Any, filters: int, stride: int, name: str) -> Any:
    shortcut = x
    y = layers.ReLU(name=f"{name}.relu1")(_bn(f"{name}.bn1")(x))
    y = _conv(filters, stride, f"{name}.conv1")(y)
    y = layers.ReLU(name=f"{name}.relu2")(_bn(f"{name}.bn2")(y))
    y = _conv(filters, 1, f"{name}.conv2")(y)
    if stride > 1:
        shortcut = layers.AveragePooling2D(stride, stride, padding="same", name=f"{name}.pool")(
            shortcut
        )
    in_channels = shortcut.shape[-1]
    if in_channels != filters:
        pad = (filters - in_channels) // 2
        shortcut = ChannelPad(pad, filters - in_channels - pad, name=f"{name}.pad")(shortcut)
    return layers.Add(name=f"{name}.add")([y, shortcut])


def build_resnet(
    depth: int,
    heads: Sequence[str] = (MERCK10,),
    input_size: int = 128,
    channels: int = 1,
) -> keras.Model:
    """ResNet-`depth` (32 or 56) with one softmax output per scheme in `heads`."""
    if depth not in BLOCKS:
        raise ValueError(f"ResNet depth must be one of {sorted(BLOCKS)}, not {depth}")
    if not heads or any(scheme not in (MARCO4, MERCK10) for scheme in heads):
        raise ValueError(f"heads must be among {MARCO4}, {MERCK10}: {heads}")
    inputs = keras.Input((input_size, input_size, channels), name="image")
    x = layers.Conv2D(
        FILTERS[0],
        3,
        padding="same",
        kernel_initializer="he_normal",
        kernel_regularizer=keras.regularizers.L2(WEIGHT_DECAY / 2),
        name="conv0",
    )(inputs)
    for stage, filters in enumerate(FILTERS, start=1):
        for block in range(1, BLOCKS[depth] + 1):
            stride = 2 if stage > 1 and block == 1 else 1
            x = _block(x, filters, stride, f"stage{stage}.block{block}")
    x = layers.ReLU(name="final.relu")(_bn("final.bn")(x))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = {
        scheme: layers.Dense(
            len(labels_of(scheme)),
            activation="softmax",
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name=scheme,
        )(x)
        for scheme in heads
    }
    suffix = "_two_head" if len(heads) > 1 else ""
    return keras.Model(inputs, outputs, name=f"resnet{depth}{suffix}")


@keras.saving.register_keras_serializable(package="marco_svc")
class MaskedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Sparse cross-entropy on probabilities, averaged over the examples with a label.

    Examples whose target is negative (`MISSING`) contribute nothing, and a batch with no
    labelled example has loss 0, so each head of a two-head model learns only from images
    labelled in its scheme.
    """

    def __init__(self, name: str = "masked_sparse_categorical_crossentropy", **kwargs: Any):
        kwargs.setdefault("reduction", "sum")
        super().__init__(name=name, **kwargs)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        mask = ops.cast(ops.greater_equal(y_true, 0), y_pred.dtype)
        losses = keras.losses.sparse_categorical_crossentropy(ops.maximum(y_true, 0), y_pred)
        return losses * mask / ops.maximum(ops.sum(mask), 1.0)


def two_head_targets(labels: Sequence[str | None]) -> dict[str, np.ndarray]:
    """Label strings of either scheme -> {scheme: int targets}, `MISSING` where unknown.

    A ten-way label also gives its four-way target (through `labels.TEN_TO_FOUR`); a
    four-way label gives no ten-way target; None gives neither.
    """
    four = np.full(len(labels), MISSING, dtype=np.int32)
    ten = np.full(len(labels), MISSING, dtype=np.int32)
    for i, label in enumerate(labels):
        if label is None:
            continue
        if label in MERCK10_LABELS:
            ten[i] = MERCK10_LABELS.index(label)
            label = TEN_TO_FOUR[label]
        if label not in MARCO4_LABELS:
            raise ValueError(f"unknown label {label!r}")
        four[i] = MARCO4_LABELS.index(label)
    return {MARCO4: four, MERCK10: ten}
