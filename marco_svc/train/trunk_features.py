"""Recipe `frozen-trunk`: the heads train on trunk features computed once per image.

The network is cut at its layer `pool` (global average pooling): the trunk before it runs
once over the training and validation images, in inference mode; the layers after it
(dropout, heads) then train on those features for the recipe's epochs. They are the whole
network's own layers, so the whole network is then saved, evaluated, calibrated and
exported like any other. One trunk pass per image instead of one per image per epoch, and
no augmentation (the features are fixed). The features wait in
`<out>/checkpoints/trunk-features.npz` (keyed by the images, preprocessing and trunk
weights) until the fit completes, so an interrupted run resumes without recomputing them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from marco_svc.nets.card import ModelCard
from marco_svc.nets.preprocessing import from_spec
from marco_svc.train.datasets import LabelledSet
from marco_svc.train.pipeline import input_batches, targets

log = logging.getLogger(__name__)
FEATURE_LAYER = "pool"
CACHE_FILE = "trunk-features.npz"
BATCH_SIZE = 64


def split_at_features(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """(trunk: image -> pooled features, heads: features -> {scheme: probabilities}),
    both made of `model`'s own layers."""
    try:
        cut = model.get_layer(FEATURE_LAYER).output
    except ValueError:
        raise ValueError(
            f"recipe frozen-trunk needs a network with a {FEATURE_LAYER!r} layer; "
            f"{model.name} has none"
        ) from None
    try:
        heads = keras.Model(cut, model.output, name=f"{model.name}_heads")
    except ValueError as exc:
        raise ValueError(
            f"recipe frozen-trunk: the heads of {model.name} read more than its "
            f"{FEATURE_LAYER!r} features ({exc})"
        ) from None
    return keras.Model(model.input, cut, name=f"{model.name}_trunk"), heads


def _key(trunk: keras.Model, card: ModelCard, sets: dict[str, LabelledSet]) -> str:
    """What the features depend on: the images, the preprocessing, the trunk's weights."""
    digest = hashlib.sha256()
    for variable in trunk.weights:
        digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
    images = {name: [e.source for e in data.examples] for name, data in sets.items()}
    digest.update(json.dumps([card.preprocessing, images], sort_keys=True).encode())
    return digest.hexdigest()


def trunk_features(
    trunk: keras.Model,
    card: ModelCard,
    sets: dict[str, LabelledSet],
    cache: Path,
    verbose: int = 0,
) -> tuple[dict[str, np.ndarray], bool]:
    """{name: features} of each set, from `cache` when it holds these; and whether it did."""
    key = _key(trunk, card, sets)
    if cache.exists():
        with np.load(cache) as stored:
            if str(stored["key"]) == key and set(sets) <= set(stored.files):
                return {name: stored[name] for name in sets}, True
    prep = from_spec(card.preprocessing)
    features = {
        name: np.asarray(
            trunk.predict(input_batches(data, prep, BATCH_SIZE), verbose=verbose), np.float32
        )
        for name, data in sets.items()
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    staged = cache.with_name(f".{cache.name}.new")
    with staged.open("wb") as handle:
        np.savez(handle, key=np.array(key), **features)
    staged.replace(cache)
    return features, False


def feature_datasets(
    model: keras.Model,
    card: ModelCard,
    train: LabelledSet,
    validation: LabelledSet,
    batch_size: int,
    seed: int,
    out: Path,
    verbose: int = 0,
) -> tuple[keras.Model, tf.data.Dataset, tf.data.Dataset, dict[str, Any]]:
    """The heads model to fit, its endless shuffled training batches and validation batches
    of trunk features, and what the features cost (for the card)."""
    trunk, heads_model = split_at_features(model)
    tick = time.perf_counter()
    sets = {"train": train, "validation": validation}
    features, reused = trunk_features(trunk, card, sets, out / "checkpoints" / CACHE_FILE, verbose)
    seconds = time.perf_counter() - tick
    images = sum(len(x) for x in features.values())
    log.info("trunk features of %d images: %.0f s%s", images, seconds, " (reused)" * reused)
    schemes = list(card.heads)
    train_ds = (
        tf.data.Dataset.from_tensor_slices((features["train"], targets(train, schemes)))
        .shuffle(len(features["train"]), seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    val_ds = tf.data.Dataset.from_tensor_slices(
        (features["validation"], targets(validation, schemes))
    ).batch(batch_size)
    info = {
        "layer": FEATURE_LAYER,
        "size": int(features["train"].shape[1]),
        "images": images,
        "seconds": round(seconds, 1),
        "reused": reused,
    }
    return heads_model, train_ds, val_ds, info
