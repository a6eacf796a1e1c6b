"""Build a complete official-format MARCO SavedModel with random weights from the real graph.

The official weights are not here, only the graph (`../shared/marco_graph`). This imports
that meta graph with `tf.compat.v1`, runs its initializers with random He-normal weights and
mostly positive BatchNorm offsets (a tamer random network, which amplifies float rounding
less), sets every BatchNorm's moving statistics (upstream first) to the statistics it sees
on the sample images, jittered, so they are far from the trivial 0/1 while activations stay
normalised; scales the logits to vary by about 0.75 between images so the probabilities do
not saturate; and saves a SavedModel with the original signatures and `legacy_init_op`
collection (the class-string table initializer), like the one a lab downloads. The graph
itself is not changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

tf1 = tf.compat.v1
SIGNATURE = "serving_default"
LOGIT_SPREAD = 0.75  # standard deviation of each logit across the calibration images
LOGITS = {
    "Inception/Logits/Conv2d_1c_1x1": "Inception/Logits/SpatialSqueeze:0",
    "Inception/AuxLogits/Conv2d_2b_1x1": "Inception/AuxLogits/SpatialSqueeze:0",
}


@dataclass(frozen=True)
class FakeMarco:
    path: Path
    probability_range: tuple[float, float]  # over the calibration images


def meta_graph(graph_dir: Path) -> meta_graph_pb2.MetaGraphDef:
    """The (only) meta graph of a SavedModel folder, read without loading it."""
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((graph_dir / "saved_model.pb").read_bytes())
    return saved.meta_graphs[0]


def _batch_norm_levels(graph: tf.Graph) -> list[list[tf.Operation]]:
    """The FusedBatchNorm ops grouped by how many BatchNorms lie upstream of each."""
    memo: dict[str, int] = {}

    def depth(op: tf.Operation) -> int:  # BatchNorms at or above this op's output
        if op.name not in memo:
            if not op.name.startswith("Inception/"):  # the preprocessing (a while loop)
                memo[op.name] = 0
            else:
                above = max((depth(t.op) for t in op.inputs), default=0)
                memo[op.name] = above + (op.type == "FusedBatchNorm")
        return memo[op.name]

    levels: dict[int, list[tf.Operation]] = {}
    for op in graph.get_operations():
        if op.type == "FusedBatchNorm":
            levels.setdefault(depth(op), []).append(op)
    return [levels[k] for k in sorted(levels)]


def build_fake_official(
    graph_dir: Path, dest: Path, images: Sequence[bytes], seed: int = 0
) -> FakeMarco:
    """Write a SavedModel to `dest` (which must not exist) and return its probability range."""
    rng = np.random.default_rng(seed)
    meta = meta_graph(graph_dir)
    signature = meta.signature_def[SIGNATURE]
    graph = tf.Graph()
    with graph.as_default(), tf1.Session(graph=graph) as session:
        saver = tf1.train.import_meta_graph(meta, clear_devices=True)
        variables = {v.op.name: v for v in tf1.global_variables()}
        values: dict[str, np.ndarray] = {}
        for name, variable in variables.items():
            shape = tuple(variable.shape.as_list())
            leaf = name.rsplit("/", 1)[-1]
            if leaf == "weights":  # He-normal keeps ReLU activations at unit scale
                fan_in = int(np.prod(shape[:-1]))
                values[name] = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
            elif leaf == "beta":  # mostly positive: fewer dead units, a tamer random network
                values[name] = rng.normal(0.5, 0.2, shape)
            elif leaf == "biases":
                values[name] = rng.normal(0.0, 0.1, shape)
            elif leaf == "moving_mean":
                values[name] = np.zeros(shape)
            elif leaf == "moving_variance":
                values[name] = np.ones(shape)
            else:  # global_step
                values[name] = np.zeros(shape)

        def load() -> None:
            feed = {
                variables[n].initial_value: v.astype(variables[n].dtype.base_dtype.as_numpy_dtype)
                for n, v in values.items()
            }
            session.run([v.initializer for v in variables.values()], feed)

        feed_images = {signature.inputs["image_bytes"].name: list(images)}
        for level in _batch_norm_levels(graph):  # upstream first: each sees calibrated inputs
            load()
            measured = session.run([op.inputs[0] for op in level], feed_images)
            for op, out in zip(level, measured, strict=True):
                scope = op.inputs[3].op.inputs[0].op.name.rsplit("/", 1)[0]
                mean, var = out.mean(axis=(0, 1, 2)), out.var(axis=(0, 1, 2))
                jitter = rng.normal(0.0, 0.1, mean.shape) * np.sqrt(var)
                values[f"{scope}/moving_mean"] = mean + jitter
                values[f"{scope}/moving_variance"] = var * rng.uniform(0.8, 1.25, var.shape) + 1e-3
        load()
        for scope, tensor in LOGITS.items():  # logits that vary by ~1 between images
            logits = session.run(tensor, feed_images)
            spread = float(np.mean(np.std(logits, axis=0))) or 1.0
            values[f"{scope}/weights"] *= LOGIT_SPREAD / spread
            centred = values[f"{scope}/biases"] - logits.mean(axis=0)
            values[f"{scope}/biases"] = centred * LOGIT_SPREAD / spread
        load()
        session.run(tf1.tables_initializer())
        scores = session.run(signature.outputs["scores"].name, feed_images)
        builder = tf1.saved_model.Builder(str(dest))
        builder.add_meta_graph_and_variables(
            session,
            ["serve"],
            signature_def_map=dict(meta.signature_def),
            saver=saver,
        )
        builder.save()
    return FakeMarco(dest, (float(scores.min()), float(scores.max())))
