"""The default model's network: a small plain CNN with a four-way and a ten-way head.

Built to train on this project's synthetic drops on a 2-core CPU in under an hour and to
run as a TFLite int8 file of well under 5 MB on an imager PC. Input: `merck_gray` at
192x192 (grayscale central square; crystals keep a few pixels where 128 would lose them).

Layout: a 3x3 stride-2 stem (24 filters), then four stages of two 3x3 convolutions
(32, 64, 128, 192 filters), the first of each with stride 2, every convolution followed by
BatchNorm and ReLU6 (int8-friendly), then global average pooling, dropout, and one softmax
Dense head per scheme, named by the scheme (the serving outputs).

With `crystal_evidence` (architecture `compact-evidence-two-head`, the shipped default,
models/presets/default-focus.toml) the four-way head takes its Clear, Other and
Precipitate logits from the pooled features but its Crystals logit is the maximum of a
crystal-evidence map computed on the 12x12 grid of stage 3 (16 input pixels a cell): a
crystal is a small local object, so "is there a crystal anywhere" is a maximum over
places, not an average, and the gradient of the Crystals score (its SmoothGrad heatmap)
falls on the place that decided it. The four-way logits are the input of its softmax
layer; every head layer's name starts with the scheme.

Keras is imported only when a network is built: the registry reads this module without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from marco_svc.labels import CRYSTALS, MARCO4, MARCO4_LABELS, MERCK10, labels_of
from marco_svc.nets.architectures import Architecture, register_architecture

if TYPE_CHECKING:
    import keras

STEM_FILTERS = 24
STAGE_FILTERS = (32, 64, 128, 192)
WEIGHT_DECAY = 4e-5
DROPOUT = 0.2
EVIDENCE_FILTERS = 64
EVIDENCE_STAGE = 3


def _conv_bn(x: keras.KerasTensor, filters: int, stride: int, name: str) -> keras.KerasTensor:
    import keras
    from keras import layers

    x = layers.Conv2D(
        filters,
        3,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=keras.regularizers.L2(WEIGHT_DECAY),
        name=f"{name}.conv",
    )(x)
    x = layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name=f"{name}.bn")(x)
    return layers.ReLU(6.0, name=f"{name}.relu")(x)


def build_compact(
    heads: Sequence[str] = (MARCO4, MERCK10),
    input_size: int = 192,
    channels: int = 1,
    crystal_evidence: bool = False,
) -> keras.Model:
    """The compact network with one softmax output per scheme in `heads`; with
    `crystal_evidence`, the four-way Crystals logit is a maximum over stage-3 places."""
    import keras
    from keras import layers

    if not heads or any(scheme not in (MARCO4, MERCK10) for scheme in heads):
        raise ValueError(f"heads must be among {MARCO4}, {MERCK10}: {heads}")
    inputs = keras.Input((input_size, input_size, channels), name="image")
    x = _conv_bn(inputs, STEM_FILTERS, 2, "stem")
    for stage, filters in enumerate(STAGE_FILTERS, start=1):
        x = _conv_bn(x, filters, 2, f"stage{stage}.a")
        x = _conv_bn(x, filters, 1, f"stage{stage}.b")
        if stage == EVIDENCE_STAGE:
            grid = x
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(DROPOUT, name="dropout")(x)
    outputs = {
        scheme: _evidence_marco4_head(x, grid)
        if crystal_evidence and scheme == MARCO4
        else layers.Dense(len(labels_of(scheme)), activation="softmax", name=scheme)(x)
        for scheme in heads
    }
    return keras.Model(inputs, outputs, name="compact_two_head")


def _evidence_marco4_head(pooled: keras.KerasTensor, grid: keras.KerasTensor) -> keras.KerasTensor:
    """Four-way probabilities: Clear, Other and Precipitate logits from the pooled features,
    the Crystals logit the maximum over the grid of a crystal-evidence map."""
    from keras import layers

    assert MARCO4_LABELS.index(CRYSTALS) == 1, "the logits are concatenated in label order"
    evidence = _conv_bn(grid, EVIDENCE_FILTERS, 1, f"{MARCO4}.crystal")
    evidence = layers.Conv2D(1, 1, name=f"{MARCO4}.crystal.map")(evidence)
    crystals = layers.GlobalMaxPooling2D(name=f"{MARCO4}.crystal.max")(evidence)
    clear = layers.Dense(1, name=f"{MARCO4}.clear")(pooled)
    other_precipitate = layers.Dense(2, name=f"{MARCO4}.other_precipitate")(pooled)
    logits = layers.Concatenate(name=f"{MARCO4}.logits")([clear, crystals, other_precipitate])
    return layers.Activation("softmax", name=MARCO4)(logits)


@register_architecture(
    "compact-two-head",
    heads=(MARCO4, MERCK10),
    preprocessing="merck_gray",
    input_size=192,
    description="a small CNN (marco_svc.nets.compact), four- and ten-way heads on pooled features",
)
def _compact_two_head(arch: Architecture) -> keras.Model:
    return build_compact(arch.heads, input_size=arch.input_size)


@register_architecture(
    "compact-evidence-two-head",
    heads=(MARCO4, MERCK10),
    preprocessing="merck_gray",
    input_size=192,
    description="the default model's small CNN: compact-two-head whose four-way Crystals logit is "
    "the maximum of a stage-3 crystal-evidence map (marco_svc.nets.compact)",
)
def _compact_evidence_two_head(arch: Architecture) -> keras.Model:
    return build_compact(arch.heads, input_size=arch.input_size, crystal_evidence=True)
