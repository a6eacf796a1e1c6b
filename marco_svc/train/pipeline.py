"""tf.data input pipelines: encoded images -> preprocessed inputs -> augmented batches.

Images are decoded and preprocessed once, exactly as the model card says (the same
TensorFlow preprocessing that serving uses), cached in memory, then shuffled, augmented
and batched every epoch. Targets are one array per head, `MISSING` (-1) where an image has
no label in that head's scheme, for the masked losses of two-head models.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

from marco_svc.labels import MARCO4, TEN_TO_FOUR
from marco_svc.nets.preprocessing import Preprocessing
from marco_svc.nets.resnet_cifar import two_head_targets
from marco_svc.train.augment import augmentation
from marco_svc.train.datasets import DatasetError, Example, LabelledSet
from marco_svc.train.evaluation import encoded_or_errors

AUTOTUNE = tf.data.AUTOTUNE


def encoded_images(examples: Sequence[Example]) -> Iterator[bytes]:
    """The encoded bytes of each example (a file, or a record of a TFRecord shard)."""
    for data in encoded_or_errors(examples):
        if isinstance(data, Exception):
            raise DatasetError(f"cannot read a training image: {data}") from data
        yield data


def targets(data: LabelledSet, heads: Sequence[str]) -> dict[str, np.ndarray]:
    """{scheme: int targets} for the model's heads; a four-way-only model maps ten-way labels."""
    labels = [example.label for example in data.examples]
    if list(heads) == [MARCO4]:
        labels = [TEN_TO_FOUR.get(label, label) for label in labels]
    found = two_head_targets(labels)
    usable = [scheme for scheme in heads if (found[scheme] >= 0).any()]
    if not usable:
        raise DatasetError(
            f"{data.origin}: its {data.scheme} labels teach none of the model's heads "
            f"({', '.join(heads)})"
        )
    return {scheme: found[scheme] for scheme in heads}


def preprocessed(data: LabelledSet, prep: Preprocessing) -> tf.data.Dataset:
    """Every image of the set preprocessed once (in order), cached in memory."""
    examples = list(data.examples)
    images = tf.data.Dataset.from_generator(
        lambda: encoded_images(examples), output_signature=tf.TensorSpec([], tf.string)
    ).apply(tf.data.experimental.assert_cardinality(len(examples)))  # Keras counts batches
    return images.map(prep.tf_from_bytes, num_parallel_calls=AUTOTUNE).cache()


def _with_targets(data: LabelledSet, prep: Preprocessing, heads: Sequence[str]) -> tf.data.Dataset:
    labels = tf.data.Dataset.from_tensor_slices(targets(data, heads))
    return tf.data.Dataset.zip(preprocessed(data, prep), labels).cache()


def _members(cached: tf.data.Dataset, members: np.ndarray, seed: int) -> tf.data.Dataset:
    """An endless shuffled stream of the examples at the given positions."""
    wanted = tf.constant(members, tf.int64)
    chosen = cached.enumerate().filter(lambda i, _x: tf.reduce_any(i == wanted))
    chosen = chosen.map(lambda _i, x: x).cache()
    return chosen.shuffle(max(len(members), 1), seed=seed, reshuffle_each_iteration=True).repeat()


def training_dataset(
    data: LabelledSet,
    prep: Preprocessing,
    heads: Sequence[str],
    batch_size: int,
    augment: str = "none",
    balance: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """An endless, shuffled, augmented batch stream for `fit` (use steps_per_epoch).

    balance=True oversamples each class inversely to its size (the Merck recipe): every
    class is drawn equally often.
    """
    augment_fn = augmentation(augment)
    cached = _with_targets(data, prep, heads)
    if balance:
        indices = np.asarray(data.indices())
        classes = [np.flatnonzero(indices == c) for c in range(len(data.labels))]
        classes = [c for c in classes if c.size]
        streams = [_members(cached, m, seed) for m in classes]
        stream = tf.data.Dataset.sample_from_datasets(streams, seed=seed)
    else:
        stream = cached.shuffle(len(data.examples), seed=seed, reshuffle_each_iteration=True)
        stream = stream.repeat()
    stream = stream.map(lambda x, y: (augment_fn(x), y), num_parallel_calls=AUTOTUNE)
    return stream.batch(batch_size, drop_remainder=False).prefetch(AUTOTUNE)


def evaluation_dataset(
    data: LabelledSet, prep: Preprocessing, heads: Sequence[str], batch_size: int
) -> tf.data.Dataset:
    """One ordered pass with targets (validation during training)."""
    return _with_targets(data, prep, heads).batch(batch_size).prefetch(AUTOTUNE)


def input_batches(data: LabelledSet, prep: Preprocessing, batch_size: int) -> tf.data.Dataset:
    """One ordered pass of inputs only (prediction, representative data for int8)."""
    return preprocessed(data, prep).batch(batch_size).prefetch(AUTOTUNE)
