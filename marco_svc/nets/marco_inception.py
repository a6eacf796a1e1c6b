"""The official MARCO network (Bruno et al. 2018) in Keras 3, variable for variable.

A modified Inception-v3 (TF-slim reference implementation) on 599x599x3 input in [-1, 1]:

- an extra 16-filter 3x3 stride-2 VALID convolution `Conv2d_0a_3x3` before `Conv2d_1a_3x3`;
- depths capped as in the paper's Table 3 (Conv2d_4a 144, Mixed_6b 128, 6c/6d 144, 6e 96,
  7a 96, 7b/7c 192). The official graph is the authority and differs from a plain cap in
  three places, reproduced here: Mixed_6c/Branch_2/Conv2d_0b_7x1 keeps 160 filters,
  Mixed_6e/Branch_2/Conv2d_0a_1x1 keeps 192, and Branch_3 of Mixed_7b/7c has 96;
- every convolution is Conv (no bias) -> BatchNorm (no scale, epsilon 0.001) -> ReLU, except
  the two logits convolutions (bias, no BatchNorm, no activation); no dropout;
- the auxiliary head on Mixed_6e (used in training) is kept so every official variable has a
  counterpart; it is not a serving output;
- four outputs in the official label order (Clear, Crystals, Other, Precipitate).

Layers are named after the official variable scopes with "/" written as "." (Keras forbids
"/"), so `official_variables(model)` maps each of the 392 official names onto its Keras
variable. The preprocessing is `marco_svc.nets.preprocessing.MarcoPreprocessing`. Keras is
imported only when the network is built: the registry reads this module without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from marco_svc.labels import MARCO4, MARCO4_LABELS
from marco_svc.nets.architectures import Architecture, register_architecture

if TYPE_CHECKING:
    import keras

ARCHITECTURE = "marco-inception-v3"
INPUT_SIZE = 599
OFFICIAL_SCOPE = "Inception"
OFFICIAL_VARIABLE_COUNT = 392  # without global_step
OFFICIAL_PARAMETER_COUNT = 11_476_584  # without global_step
BATCH_NORM_EPSILON = 0.001
BATCH_NORM_MOMENTUM = 0.9997  # TF-slim inception_v3_arg_scope batch_norm_decay
WEIGHT_DECAY = 4e-5  # the graph's L2Regularizer weight; slim adds weight * sum(w^2) / 2

LOGITS = "marco4_logits"
AUX_LOGITS = "marco4_aux_logits"


@dataclass(frozen=True)
class Conv:
    """One slim `conv2d` (+ BatchNorm + ReLU): scope, filters, kernel (h, w), stride, padding."""

    scope: str
    filters: int
    kernel: tuple[int, int]
    stride: int = 1
    padding: str = "same"


@dataclass(frozen=True)
class Pool:
    kind: str  # "max" | "avg"
    scope: str
    size: int
    stride: int
    padding: str


# Branch = a chain of ops; a tuple inside a chain is a split whose outputs are concatenated.
Step = Conv | Pool | tuple["Conv", ...]

STEM: tuple[Conv | Pool, ...] = (
    Conv("Conv2d_0a_3x3", 16, (3, 3), 2, "valid"),
    Conv("Conv2d_1a_3x3", 32, (3, 3), 2, "valid"),
    Conv("Conv2d_2a_3x3", 32, (3, 3), 1, "valid"),
    Conv("Conv2d_2b_3x3", 64, (3, 3)),
    Pool("max", "MaxPool_3a_3x3", 3, 2, "valid"),
    Conv("Conv2d_3b_1x1", 80, (1, 1), 1, "valid"),
    Conv("Conv2d_4a_3x3", 144, (3, 3), 1, "valid"),
    Pool("max", "MaxPool_5a_3x3", 3, 2, "valid"),
)


def _c(name: str, filters: int, kernel: tuple[int, int], stride: int = 1, pad: str = "same"):
    return Conv(name, filters, kernel, stride, pad)


def _avg_branch(filters: int) -> tuple[Step, ...]:
    return (Pool("avg", "AvgPool_0a_3x3", 3, 1, "same"), _c("Conv2d_0b_1x1", filters, (1, 1)))


def _mixed_5(b3: int, b1_names: tuple[str, str] = ("Conv2d_0a_1x1", "Conv2d_0b_5x5")):
    return (
        (_c("Conv2d_0a_1x1", 64, (1, 1)),),
        (_c(b1_names[0], 48, (1, 1)), _c(b1_names[1], 64, (5, 5))),
        (
            _c("Conv2d_0a_1x1", 64, (1, 1)),
            _c("Conv2d_0b_3x3", 96, (3, 3)),
            _c("Conv2d_0c_3x3", 96, (3, 3)),
        ),
        _avg_branch(b3),
    )


def _mixed_6(d: int, b2: tuple[int, int, int, int, int]):
    return (
        (_c("Conv2d_0a_1x1", d, (1, 1)),),
        (
            _c("Conv2d_0a_1x1", d, (1, 1)),
            _c("Conv2d_0b_1x7", d, (1, 7)),
            _c("Conv2d_0c_7x1", d, (7, 1)),
        ),
        (
            _c("Conv2d_0a_1x1", b2[0], (1, 1)),
            _c("Conv2d_0b_7x1", b2[1], (7, 1)),
            _c("Conv2d_0c_1x7", b2[2], (1, 7)),
            _c("Conv2d_0d_7x1", b2[3], (7, 1)),
            _c("Conv2d_0e_1x7", b2[4], (1, 7)),
        ),
        _avg_branch(d),
    )


def _mixed_7(b1_split: tuple[str, str]):
    return (
        (_c("Conv2d_0a_1x1", 192, (1, 1)),),
        (
            _c("Conv2d_0a_1x1", 192, (1, 1)),
            (_c(b1_split[0], 192, (1, 3)), _c(b1_split[1], 192, (3, 1))),
        ),
        (
            _c("Conv2d_0a_1x1", 192, (1, 1)),
            _c("Conv2d_0b_3x3", 192, (3, 3)),
            (_c("Conv2d_0c_1x3", 192, (1, 3)), _c("Conv2d_0d_3x1", 192, (3, 1))),
        ),
        _avg_branch(96),
    )


MIXED: tuple[tuple[str, tuple[tuple[Step, ...], ...]], ...] = (
    ("Mixed_5b", _mixed_5(32)),
    ("Mixed_5c", _mixed_5(64, ("Conv2d_0b_1x1", "Conv_1_0c_5x5"))),
    ("Mixed_5d", _mixed_5(64)),
    (
        "Mixed_6a",
        (
            (_c("Conv2d_1a_1x1", 256, (3, 3), 2, "valid"),),
            (
                _c("Conv2d_0a_1x1", 64, (1, 1)),
                _c("Conv2d_0b_3x3", 96, (3, 3)),
                _c("Conv2d_1a_1x1", 96, (3, 3), 2, "valid"),
            ),
            (Pool("max", "MaxPool_1a_3x3", 3, 2, "valid"),),
        ),
    ),
    ("Mixed_6b", _mixed_6(128, (128, 128, 128, 128, 128))),
    ("Mixed_6c", _mixed_6(144, (144, 160, 144, 144, 144))),
    ("Mixed_6d", _mixed_6(144, (144, 144, 144, 144, 144))),
    ("Mixed_6e", _mixed_6(96, (192, 96, 96, 96, 96))),
    (
        "Mixed_7a",
        (
            (_c("Conv2d_0a_1x1", 96, (1, 1)), _c("Conv2d_1a_3x3", 96, (3, 3), 2, "valid")),
            (
                _c("Conv2d_0a_1x1", 96, (1, 1)),
                _c("Conv2d_0b_1x7", 96, (1, 7)),
                _c("Conv2d_0c_7x1", 96, (7, 1)),
                _c("Conv2d_1a_3x3", 96, (3, 3), 2, "valid"),
            ),
            (Pool("max", "MaxPool_1a_3x3", 3, 2, "valid"),),
        ),
    ),
    ("Mixed_7b", _mixed_7(("Conv2d_0b_1x3", "Conv2d_0b_3x1"))),
    ("Mixed_7c", _mixed_7(("Conv2d_0b_1x3", "Conv2d_0c_3x1"))),
)
AUX_AFTER = "Mixed_6e"


def _layer_name(scope: str) -> str:
    return scope.replace("/", ".")


def _conv_bn_relu(x: keras.KerasTensor, conv: Conv, prefix: str) -> keras.KerasTensor:
    import keras
    from keras import layers

    scope = f"{prefix}{conv.scope}"
    x = layers.Conv2D(
        conv.filters,
        conv.kernel,
        strides=conv.stride,
        padding=conv.padding,
        use_bias=False,
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.1),
        kernel_regularizer=keras.regularizers.L2(WEIGHT_DECAY / 2),
        name=_layer_name(scope),
    )(x)
    x = layers.BatchNormalization(
        momentum=BATCH_NORM_MOMENTUM,
        epsilon=BATCH_NORM_EPSILON,
        scale=False,
        name=_layer_name(f"{scope}/BatchNorm"),
    )(x)
    return layers.ReLU(name=_layer_name(f"{scope}/Relu"))(x)


def _pool(x: keras.KerasTensor, pool: Pool, prefix: str) -> keras.KerasTensor:
    from keras import layers

    cls = layers.MaxPooling2D if pool.kind == "max" else layers.AveragePooling2D
    return cls(pool.size, pool.stride, pool.padding, name=_layer_name(prefix + pool.scope))(x)


def _chain(x: keras.KerasTensor, steps: tuple[Step, ...], prefix: str) -> keras.KerasTensor:
    from keras import layers

    for step in steps:
        if isinstance(step, tuple):
            parts = [_conv_bn_relu(x, conv, prefix) for conv in step]
            x = layers.Concatenate(name=_layer_name(f"{prefix}{step[0].scope}_concat"))(parts)
        elif isinstance(step, Pool):
            x = _pool(x, step, prefix)
        else:
            x = _conv_bn_relu(x, step, prefix)
    return x


def _logits_conv(x: keras.KerasTensor, scope: str, stddev: float) -> keras.KerasTensor:
    import keras
    from keras import layers

    return layers.Conv2D(
        len(MARCO4_LABELS),
        1,
        use_bias=True,
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=stddev),
        kernel_regularizer=keras.regularizers.L2(WEIGHT_DECAY / 2),
        name=_layer_name(scope),
    )(x)


def _aux_head(x: keras.KerasTensor) -> keras.KerasTensor:
    import keras
    from keras import layers

    x = _pool(x, Pool("avg", "AvgPool_1a_5x5", 5, 3, "valid"), "AuxLogits/")
    x = _conv_bn_relu(x, Conv("Conv2d_1b_1x1", 128, (1, 1)), "AuxLogits/")
    x = layers.Conv2D(
        768,
        5,
        padding="valid",
        use_bias=False,
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
        kernel_regularizer=keras.regularizers.L2(WEIGHT_DECAY / 2),
        name="AuxLogits.Conv2d_2a_5x5",
    )(x)
    x = layers.BatchNormalization(
        momentum=BATCH_NORM_MOMENTUM,
        epsilon=BATCH_NORM_EPSILON,
        scale=False,
        name="AuxLogits.Conv2d_2a_5x5.BatchNorm",
    )(x)
    x = layers.ReLU(name="AuxLogits.Conv2d_2a_5x5.Relu")(x)
    x = _logits_conv(x, "AuxLogits/Conv2d_2b_1x1", 0.001)
    return layers.Reshape((len(MARCO4_LABELS),), name=AUX_LOGITS)(x)


def build_marco_inception() -> keras.Model:
    """The network, outputs {"marco4": probabilities, logits, aux logits} for (N, 599, 599, 3)."""
    import keras
    from keras import layers

    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="image")
    x = _chain(inputs, STEM, "")
    aux = None
    for name, branches in MIXED:
        outputs = [_chain(x, branch, f"{name}/Branch_{i}/") for i, branch in enumerate(branches)]
        x = layers.Concatenate(name=f"{name}.concat")(outputs)
        if name == AUX_AFTER:
            aux = _aux_head(x)
    assert aux is not None
    x = _pool(x, Pool("avg", "AvgPool_1a_8x8", 8, 2, "valid"), "Logits/")
    x = _logits_conv(x, "Logits/Conv2d_1c_1x1", 0.1)
    logits = layers.Reshape((len(MARCO4_LABELS),), name=LOGITS)(x)
    probabilities = layers.Softmax(name=MARCO4)(logits)
    return keras.Model(
        inputs,
        {MARCO4: probabilities, LOGITS: logits, AUX_LOGITS: aux},
        name="marco_inception_v3",
    )


@register_architecture(
    ARCHITECTURE,
    heads=(MARCO4,),
    preprocessing="marco",
    input_size=INPUT_SIZE,
    description="MARCO's Inception-v3 (Bruno et al. 2018), "
    "the official graph variable for variable",
)
def _marco_inception_v3(arch: Architecture) -> keras.Model:
    return build_marco_inception()


_VARIABLE_NAMES = {
    "kernel": "weights",
    "bias": "biases",
    "beta": "BatchNorm/beta",
    "moving_mean": "BatchNorm/moving_mean",
    "moving_variance": "BatchNorm/moving_variance",
}


def official_variables(model: keras.Model) -> dict[str, keras.Variable]:
    """{official variable name: Keras variable} for all 392 variables of the official graph."""
    mapping: dict[str, keras.Variable] = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        scope = layer.name.removesuffix(".BatchNorm").replace(".", "/")
        for variable in layer.weights:
            official = f"{OFFICIAL_SCOPE}/{scope}/{_VARIABLE_NAMES[variable.name]}"
            if official in mapping:
                raise AssertionError(f"two Keras variables map onto {official}")
            mapping[official] = variable
    return mapping
