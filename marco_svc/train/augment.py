"""Training-time augmentation of preprocessed network inputs (values in [-1, 1]).

- `marco`: the MARCO recipe (Bruno et al. 2018): a random crop (scale 0.65..1 of the side,
  resized back to the input size, standing in for Inception's random 599 crops), brightness
  +-32/255, saturation 0.5..1.5, hue +-0.2, contrast 0.5..1.5 (colour ops on RGB inputs
  only), left-right and up-down flips.
- `merck`: the Merck recipe (Ghafurian et al.): rotations by multiples of 90 degrees and
  flips (the drop has no preferred orientation).
- `default`: the Merck geometry plus mild brightness/contrast jitter, for the default model.
- `noisy`: `default` plus, on half the images, Gaussian pixel noise of a random sigma up to
  `NOISE_SIGMA` (not clipped). Training with noise is what Smilkov et al. (SmoothGrad, 2017,
  section 4.3) found to sharpen SmoothGrad maps: the network learns to ignore the noise the
  heatmaps add (sigma 15% of the input range, 0.3 here), so the noisy copies keep looking
  at the crystal. Recipe `focus` (the default model's second stage) trains with it.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

AUGMENTATIONS = ("none", "marco", "merck", "default", "noisy")
NOISE_SIGMA = 0.3  # SmoothGrad's sigma: 15% of the [-1, 1] input range


def _to_unit(x: tf.Tensor) -> tf.Tensor:
    return x * 0.5 + 0.5


def _from_unit(x: tf.Tensor) -> tf.Tensor:
    return (tf.clip_by_value(x, 0.0, 1.0) - 0.5) * 2.0


def _flips(x: tf.Tensor) -> tf.Tensor:
    return tf.image.random_flip_up_down(tf.image.random_flip_left_right(x))


def _rot90(x: tf.Tensor) -> tf.Tensor:
    return tf.image.rot90(x, tf.random.uniform([], 0, 4, dtype=tf.int32))


def _random_crop(x: tf.Tensor, min_scale: float) -> tf.Tensor:
    size = tf.shape(x)[0]
    side = tf.cast(tf.cast(size, tf.float32) * tf.random.uniform([], min_scale, 1.0), tf.int32)
    crop = tf.image.random_crop(x, tf.stack([side, side, tf.shape(x)[2]]))
    return tf.image.resize(crop, tf.stack([size, size]), method="bilinear")


def marco(x: tf.Tensor) -> tf.Tensor:
    x = _random_crop(x, 0.65)
    x = _to_unit(x)
    x = tf.image.random_brightness(x, 32.0 / 255.0)
    if x.shape[-1] == 3:
        x = tf.image.random_saturation(x, 0.5, 1.5)
        x = tf.image.random_hue(x, 0.2)
    x = tf.image.random_contrast(x, 0.5, 1.5)
    return _flips(_from_unit(x))


def merck(x: tf.Tensor) -> tf.Tensor:
    return _flips(_rot90(x))


def default(x: tf.Tensor) -> tf.Tensor:
    x = _to_unit(merck(x))
    x = tf.image.random_brightness(x, 20.0 / 255.0)
    x = tf.image.random_contrast(x, 0.75, 1.3)
    return _from_unit(x)


def noisy(x: tf.Tensor) -> tf.Tensor:
    """`default`, then on half the images Gaussian noise of a sigma drawn from [0, 0.3]."""
    x = default(x)
    sigma = tf.random.uniform([], 0.0, NOISE_SIGMA)
    sigma *= tf.cast(tf.random.uniform([]) < 0.5, tf.float32)
    return x + tf.random.normal(tf.shape(x), stddev=sigma)


def augmentation(name: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """The augmentation of a recipe by name (`none` is the identity)."""
    table = {
        "none": tf.identity,
        "marco": marco,
        "merck": merck,
        "default": default,
        "noisy": noisy,
    }
    if name not in table:
        raise ValueError(f"unknown augmentation {name!r} (known: {', '.join(AUGMENTATIONS)})")
    return table[name]
