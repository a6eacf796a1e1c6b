"""The ten-way ResNets (Ghafurian et al.) and the two-head variant with its masked loss."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from marco_svc.labels import MARCO4, MARCO4_LABELS, MERCK10, MERCK10_LABELS
from marco_svc.nets.architectures import ARCHITECTURES, new_card
from marco_svc.nets.resnet_cifar import (
    MISSING,
    ChannelPad,
    MaskedSparseCategoricalCrossentropy,
    build_resnet,
    two_head_targets,
)


@pytest.mark.parametrize(("depth", "params"), [(32, 467_274), (56, 858_826)])
def test_cifar_layout(depth: int, params: int) -> None:
    model = build_resnet(depth)
    assert model.input_shape == (None, 128, 128, 1)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert len(convs) + len(dense) == depth  # 6n + 2 weighted layers
    n = (depth - 2) // 6
    for stage, (filters, side) in enumerate([(16, 128), (32, 64), (64, 32)], start=1):
        for block in range(1, n + 1):
            conv = model.get_layer(f"stage{stage}.block{block}.conv2")
            assert (conv.filters, conv.output.shape[1]) == (filters, side)
    assert model.get_layer("stage2.block1.conv1").strides == (2, 2)
    assert model.get_layer("stage2.block2.conv1").strides == (1, 1)
    with pytest.raises(ValueError, match="No such layer"):
        model.get_layer(f"stage3.block{n + 1}.conv2")
    assert model.count_params() == params
    assert list(model.output) == [MERCK10] and model.output[MERCK10].shape == (None, 10)


def test_pre_activation_blocks_with_parameter_free_shortcuts() -> None:
    model = build_resnet(32)
    block = model.get_layer("stage2.block1.add")
    residual, shortcut = (t._keras_history.operation for t in block.input)
    assert residual.name == "stage2.block1.conv2"
    assert isinstance(shortcut, ChannelPad) and (shortcut.before, shortcut.after) == (8, 8)
    assert not shortcut.weights and not model.get_layer("stage2.block1.pool").weights
    first = model.get_layer("stage1.block1.bn1")
    assert first.input is model.get_layer("conv0").output  # BN -> ReLU -> conv, no post-add ReLU
    x = np.arange(2 * 4 * 4 * 16, dtype=np.float32).reshape(2, 4, 4, 16)
    padded = ChannelPad(8, 8)(x).numpy()
    assert padded.shape == (2, 4, 4, 32)
    assert np.array_equal(padded[..., 8:24], x) and not padded[..., :8].any()


def test_two_head_variant_shares_the_trunk() -> None:
    model = build_resnet(32, heads=(MARCO4, MERCK10))
    assert set(model.output) == {MARCO4, MERCK10}
    assert model.count_params() == 467_274 + 64 * 4 + 4
    four, ten = model.get_layer(MARCO4), model.get_layer(MERCK10)
    assert four.input is ten.input is model.get_layer("pool").output


def test_architectures_expose_everything_scoring_needs_through_the_card() -> None:
    for name, arch in ARCHITECTURES.items():
        card = new_card(name, "x", "1")
        assert card.architecture == name
        assert list(card.heads) == list(arch.heads)
        side = arch.preprocessing["size"]
        expected = (599, 599, 3) if name.startswith("marco") else (side, side, 1)
        sizes = {"marco-inception-v3": 599, "lite0-two-head": 192}
        assert side == (192 if name.startswith("compact-") else sizes.get(name, 128))
        assert (*card.input_size, card.channels) == expected
        assert card.preprocessing["name"] == ("marco" if name.startswith("marco") else "merck_gray")
    assert new_card("resnet-56", "x", "1").heads == {MERCK10: list(MERCK10_LABELS)}
    assert new_card("resnet-32-two-head", "x", "1").scheme == "both"


def test_two_head_targets_use_the_one_ten_to_four_map() -> None:
    targets = two_head_targets(["needles & plates", "Precipitate", None, "bad drop", "clear"])
    assert targets[MERCK10].tolist() == [
        MERCK10_LABELS.index("needles & plates"),
        MISSING,
        MISSING,
        MERCK10_LABELS.index("bad drop"),
        MERCK10_LABELS.index("clear"),
    ]
    assert [MARCO4_LABELS[i] if i >= 0 else None for i in targets[MARCO4]] == [
        "Crystals",
        "Precipitate",
        None,
        "Other",
        "Clear",
    ]
    with pytest.raises(ValueError, match="unknown label 'sand'"):
        two_head_targets(["sand"])


def test_masked_loss_averages_over_labelled_examples_only() -> None:
    loss = MaskedSparseCategoricalCrossentropy()
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]], dtype=np.float32)
    value = float(loss(np.array([0, MISSING, 2]), probs))
    assert value == pytest.approx(-(np.log(0.7) + np.log(0.4)) / 2, rel=1e-5)
    assert float(loss(np.array([MISSING] * 3), probs)) == 0.0
    assert float(loss(np.array([1, 1, 1]), probs)) == pytest.approx(
        -np.mean(np.log([0.2, 0.8, 0.3])), rel=1e-5
    )


def test_a_head_without_labels_in_a_batch_does_not_learn_from_it() -> None:
    keras.utils.set_random_seed(1)
    model = build_resnet(32, heads=(MARCO4, MERCK10), input_size=16)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss={
            MARCO4: MaskedSparseCategoricalCrossentropy(),
            MERCK10: MaskedSparseCategoricalCrossentropy(),
        },
    )
    x = np.random.default_rng(0).normal(size=(8, 16, 16, 1)).astype(np.float32)
    four_only = two_head_targets(["Crystals", "Clear", "Other", "Precipitate"] * 2)
    ten_before = [w.numpy().copy() for w in model.get_layer(MERCK10).weights]
    four_before = [w.numpy().copy() for w in model.get_layer(MARCO4).weights]
    history = model.fit(x, four_only, batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert history.history[f"{MERCK10}_loss"] == [0.0, 0.0]
    for before, after in zip(ten_before, model.get_layer(MERCK10).weights, strict=True):
        assert np.array_equal(before, after.numpy())  # untouched: no ten-way label
    changed = [
        not np.array_equal(b, a.numpy())
        for b, a in zip(four_before, model.get_layer(MARCO4).weights, strict=True)
    ]
    assert all(changed)
