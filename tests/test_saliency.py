"""SmoothGrad mechanics on a small network whose class score only sees one region."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from marco_svc.scoring.saliency import (
    SmoothGradParams,
    mass_inside,
    overlay,
    png_bytes,
    smoothgrad,
)

BOX = (20, 8, 36, 20)  # x0, y0, x1, y1


@pytest.fixture(scope="module")
def masked_model():
    """Two classes; their scores depend only on the pixels inside BOX."""
    import keras

    mask = np.zeros((32, 48, 3), np.float32)
    x0, y0, x1, y1 = BOX
    mask[y0:y1, x0:x1] = 1.0
    inputs = keras.Input((32, 48, 3))
    seen = keras.layers.Lambda(lambda t: t * mask)(inputs)
    hidden = keras.layers.Conv2D(4, 3, padding="same", activation="tanh")(seen)
    pooled = keras.layers.GlobalAveragePooling2D()(hidden)
    logits = keras.layers.Dense(2)(pooled)
    probs = keras.layers.Softmax()(logits)
    keras.utils.set_random_seed(1)
    return keras.Model(inputs, {"marco4": probs, "marco4_logits": logits})


def test_map_sits_where_the_class_score_looks(masked_model) -> None:
    x = np.random.default_rng(0).uniform(-1, 1, (32, 48, 3)).astype(np.float32)
    heatmap = smoothgrad(masked_model, x, "marco4", 1, SmoothGradParams(n=12, batch_size=5))
    assert heatmap.shape == (32, 48) and heatmap.dtype == np.float32
    assert heatmap.max() > 0
    assert mass_inside(heatmap, BOX) == pytest.approx(1.0)


def test_same_seed_same_map_and_noise_matters(masked_model) -> None:
    x = np.zeros((32, 48, 3), np.float32)
    x[10:18, 22:30] = 1.0
    params = SmoothGradParams(n=6, batch_size=4, seed=3)
    first = smoothgrad(masked_model, x, "marco4", 0, params)
    again = smoothgrad(masked_model, x, "marco4", 0, params)
    other = smoothgrad(masked_model, x, "marco4", 0, SmoothGradParams(n=6, seed=4))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_overlay_is_a_png_of_the_input_size() -> None:
    heatmap = np.zeros((40, 50), np.float32)
    heatmap[10:20, 10:20] = 1.0
    grey = np.full((80, 100), 120, np.uint8)
    picture = overlay(heatmap, grey)
    assert picture.shape == (40, 50, 3) and picture.dtype == np.uint8
    hot, cold = picture[15, 15].astype(int), picture[35, 45].astype(int)
    assert abs(hot - cold).sum() > 100
    decoded = cv2.imdecode(np.frombuffer(png_bytes(picture), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (40, 50, 3)


def test_the_class_score_is_the_logit_recovered_from_a_softmax_head() -> None:
    import keras

    from marco_svc.scoring.saliency import _score_fn

    keras.utils.set_random_seed(2)
    inputs = keras.Input((16, 16, 1))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(3, 3)(inputs))
    head = keras.layers.Dense(4, activation="softmax", name="marco4")
    model = keras.Model(inputs, {"marco4": head(pooled)})
    batch = np.random.default_rng(1).uniform(-1, 1, (2, 16, 16, 1)).astype(np.float32)
    features = keras.Model(inputs, pooled)(batch).numpy()
    logits = features @ head.kernel.numpy() + head.bias.numpy()
    np.testing.assert_allclose(
        _score_fn(model, "marco4", 2)(batch).numpy(), logits[:, 2], rtol=1e-5
    )


def test_the_class_score_is_the_input_of_a_softmax_activation_output() -> None:
    import keras

    from marco_svc.scoring.saliency import _score_fn

    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 1))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    logits = keras.layers.Dense(4, name="logits")(pooled)
    model = keras.Model(
        inputs, {"marco4": keras.layers.Activation("softmax", name="marco4")(logits)}
    )
    batch = np.random.default_rng(1).uniform(-1, 1, (2, 16, 16, 1)).astype(np.float32)
    expected = keras.Model(inputs, logits)(batch).numpy()[:, 1]
    np.testing.assert_allclose(_score_fn(model, "marco4", 1)(batch).numpy(), expected, rtol=1e-5)


def test_a_grown_box_keeps_whole_pixels_and_the_map() -> None:
    from marco_svc.scoring.saliency import grown_box

    assert grown_box((10.5, 20, 30.5, 24), 100) == (0, 14, 41, 30)  # 10 px x, 6 px least y
    assert grown_box((90, 90, 99, 99), 96) == (84, 84, 96, 96)
