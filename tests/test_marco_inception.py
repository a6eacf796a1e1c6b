"""The Keras MARCO network against the official graph's variable list and the paper."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from marco_svc.labels import MARCO4, MARCO4_LABELS
from marco_svc.nets.marco_inception import (
    AUX_LOGITS,
    LOGITS,
    OFFICIAL_PARAMETER_COUNT,
    OFFICIAL_VARIABLE_COUNT,
    build_marco_inception,
    official_variables,
)
from tests.conftest import MARCO_GRAPH, needs_shared
from tests.fake_marco import meta_graph

# Paper, Table 3: every convolution in these blocks has at most this many filters ...
TABLE_3 = {
    "Conv2d_4a_3x3": 144,
    "Mixed_6b": 128,
    "Mixed_6c": 144,
    "Mixed_6d": 144,
    "Mixed_6e": 96,
    "Mixed_7a": 96,
    "Mixed_7b": 192,
    "Mixed_7c": 192,
}
# ... except these two, where the official graph keeps more (the graph is the authority).
OVER_THE_CAP = {
    "Inception/Mixed_6c/Branch_2/Conv2d_0b_7x1/weights": 160,
    "Inception/Mixed_6e/Branch_2/Conv2d_0a_1x1/weights": 192,
}


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return build_marco_inception()


def test_parameter_and_variable_counts(model: keras.Model) -> None:
    assert model.count_params() == OFFICIAL_PARAMETER_COUNT == 11_476_584
    assert len(model.weights) == len(official_variables(model)) == OFFICIAL_VARIABLE_COUNT


@needs_shared(MARCO_GRAPH)
@pytest.mark.shared
def test_every_official_variable_has_a_counterpart_of_the_same_shape(model: keras.Model) -> None:
    graph = meta_graph(MARCO_GRAPH).graph_def
    official = {
        node.name: tuple(d.size for d in node.attr["shape"].shape.dim)
        for node in graph.node
        if node.op == "VariableV2" and node.name != "global_step"
    }
    assert len(official) == 392
    assert sum(int(np.prod(shape)) for shape in official.values()) == 11_476_584
    ours = official_variables(model)
    for name, shape in sorted(official.items()):
        assert name in ours, f"no Keras variable for {name}"
        assert tuple(ours[name].shape) == shape, name
    assert set(ours) == set(official)


def test_depths_follow_table_3(model: keras.Model) -> None:
    for name, variable in official_variables(model).items():
        if not name.endswith("/weights") or "Logits" in name:
            continue
        block = name.split("/")[1]
        if block in TABLE_3:
            expected_max = OVER_THE_CAP.get(name, TABLE_3[block])
            assert variable.shape[-1] <= expected_max, name
    assert official_variables(model)["Inception/Conv2d_0a_3x3/weights"].shape == (3, 3, 3, 16)


def test_the_paper_s_modifications(model: keras.Model) -> None:
    assert model.input_shape == (None, 599, 599, 3)
    stem = model.get_layer("Conv2d_0a_3x3")
    assert (stem.filters, stem.kernel_size, stem.strides, stem.padding) == (
        16,
        (3, 3),
        (2, 2),
        "valid",
    )
    assert model.get_layer("Conv2d_1a_3x3").input.shape[1:] == (299, 299, 16)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 97
    assert all(not n.scale and n.center and n.epsilon == 0.001 for n in norms)
    assert not [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert model.get_layer("Mixed_7c.concat").output.shape[1:] == (8, 8, 1056)


def test_outputs_in_the_official_label_order(model: keras.Model) -> None:
    x = np.random.default_rng(0).uniform(-1, 1, (2, 599, 599, 3)).astype(np.float32)
    out = model(x, training=False)
    assert set(out) == {MARCO4, LOGITS, AUX_LOGITS}
    assert out[MARCO4].shape == (2, len(MARCO4_LABELS)) == out[AUX_LOGITS].shape
    softmax = keras.ops.softmax(out[LOGITS]).numpy()
    assert np.allclose(out[MARCO4].numpy(), softmax, atol=1e-6)
    assert np.allclose(out[MARCO4].numpy().sum(axis=1), 1.0, atol=1e-5)
