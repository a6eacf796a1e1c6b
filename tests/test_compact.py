"""The default model's compact network: its Crystals logit is a maximum over places."""

from __future__ import annotations

import keras
import numpy as np

from marco_svc.labels import CRYSTALS, MARCO4, MARCO4_LABELS, MERCK10
from marco_svc.nets.compact import build_compact


def test_the_crystals_logit_is_the_maximum_of_the_evidence_map() -> None:
    keras.utils.set_random_seed(4)
    model = build_compact(crystal_evidence=True)
    assert set(model.output) == {MARCO4, MERCK10}
    assert (
        model.get_layer(f"{MARCO4}.crystal.conv").input is model.get_layer("stage3.b.relu").output
    )
    evidence = keras.Model(model.input, model.get_layer(f"{MARCO4}.crystal.map").output)
    logits = keras.Model(model.input, model.get_layer(f"{MARCO4}.logits").output)
    batch = np.random.default_rng(0).uniform(-1, 1, (2, 192, 192, 1)).astype(np.float32)
    grid = evidence(batch).numpy()
    assert grid.shape == (2, 12, 12, 1)  # 16 input pixels a cell
    values = logits(batch).numpy()
    crystals = MARCO4_LABELS.index(CRYSTALS)
    np.testing.assert_allclose(values[:, crystals], grid.max(axis=(1, 2, 3)), rtol=1e-5)
    probabilities = model(batch)[MARCO4].numpy()
    np.testing.assert_allclose(probabilities, keras.ops.softmax(values).numpy(), rtol=1e-5)


def test_only_the_arg_max_cell_s_receptive_field_moves_the_crystals_score() -> None:
    """The gradient of the Crystals logit is zero outside the winning cell's field of view
    (119 input pixels: the stage-3 cell's 87 plus the evidence branch's 3x3 convolution;
    'same' padding of the strided convolutions pads after, so a cell looks down and right)."""
    import tensorflow as tf

    keras.utils.set_random_seed(5)
    model = build_compact(crystal_evidence=True)
    evidence = keras.Model(model.input, model.get_layer(f"{MARCO4}.crystal.map").output)
    logits = keras.Model(model.input, model.get_layer(f"{MARCO4}.logits").output)
    batch = np.random.default_rng(1).uniform(-1, 1, (1, 192, 192, 1)).astype(np.float32)
    grid = evidence(batch).numpy()[0, :, :, 0]
    row, column = np.unravel_index(int(grid.argmax()), grid.shape)
    inputs = tf.constant(batch)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        score = logits(inputs)[:, MARCO4_LABELS.index(CRYSTALS)]
    gradient = np.abs(tape.gradient(score, inputs).numpy()[0, :, :, 0])
    centre_y, centre_x, reach = 16 * row + 15, 16 * column + 15, 60
    inside = np.zeros_like(gradient, dtype=bool)
    inside[
        max(centre_y - reach, 0) : centre_y + reach, max(centre_x - reach, 0) : centre_x + reach
    ] = True
    assert gradient[~inside].sum() == 0.0
    assert gradient[inside].sum() > 0.0


def test_without_evidence_every_head_reads_the_pooled_features() -> None:
    model = build_compact()
    pooled = model.get_layer("dropout").output
    assert model.get_layer(MARCO4).input is pooled and model.get_layer(MERCK10).input is pooled
    assert all(not layer.name.startswith(f"{MARCO4}.") for layer in model.layers)
