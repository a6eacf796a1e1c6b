"""Import the official MARCO SavedModel: map its variables onto the Keras network, prove it.

The official model (TF 1.5 SavedModel, or the `savedmodel.zip` it is distributed as) is
loaded with `tf.compat.v1`; its 392 variables are copied onto `build_marco_inception()` by
name; both run on the same sample images (the official one on the encoded JPEG strings of
its serving signature, ours through `MarcoPreprocessing`), and the model is registered only
if every probability agrees within `TOLERANCE`. The result is an ordinary model version: a
`model.keras` file (the whole functional model, loadable without our code) and its card.
"""

from __future__ import annotations

import io
import logging
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from marco_svc.errors import first_line
from marco_svc.labels import MARCO4, MARCO4_LABELS
from marco_svc.nets.card import sha256_of

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

TOLERANCE = 1e-4
SIGNATURES = ("serving_default", "predict_images")
INPUT_KEY, SCORES_KEY, CLASSES_KEY = "image_bytes", "scores", "classes"
BATCH = 8


class ImportRefused(ValueError):
    """The source is not the official MARCO model, is damaged, or does not reproduce."""


@dataclass(frozen=True)
class Comparison:
    images: int
    max_abs_difference: float
    probability_range: tuple[float, float]  # of the official model's probabilities


# --- the source: a folder or a zip ----------------------------------------------------------


@contextmanager
def saved_model_folder(source: Path) -> Iterator[Path]:
    """The SavedModel folder of `source` (a folder, or a .zip extracted to a temporary one)."""
    if source.is_dir():
        yield _locate(source, source)
        return
    if not source.is_file():
        raise ImportRefused(f"{source}: no such file or folder")
    if not zipfile.is_zipfile(source):
        raise ImportRefused(f"{source} is neither a SavedModel folder nor a .zip of one")
    with tempfile.TemporaryDirectory(prefix="marco-import-") as tmp:
        _safe_extract(source, Path(tmp))
        yield _locate(Path(tmp), source)


def _safe_extract(archive: Path, dest: Path) -> None:
    """Extract a zip, refusing absolute paths, '..' components and symbolic links."""
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            parts = PurePosixPath(member.filename.replace("\\", "/")).parts
            is_link = (member.external_attr >> 16) & 0o170000 == 0o120000
            if member.filename.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
                raise ImportRefused(f"{archive}: unsafe path {member.filename!r} in the zip")
            if is_link:
                raise ImportRefused(f"{archive}: symbolic link {member.filename!r} in the zip")
        try:
            zf.extractall(dest)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ImportRefused(f"{archive}: cannot extract: {exc}") from None


def _locate(root: Path, source: Path) -> Path:
    found = sorted(p.parent for p in root.rglob("saved_model.pb"))
    if not found:
        raise ImportRefused(f"{source} is not a SavedModel: no saved_model.pb in it")
    if len(found) > 1:
        raise ImportRefused(f"{source} holds {len(found)} SavedModels; give one folder")
    return found[0]


# --- reading the official model -------------------------------------------------------------


def read_official_variables(
    folder: Path, expected: dict[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """{name: array} for every expected variable, or ImportRefused naming what is wrong."""
    import tensorflow as tf

    if not (folder / "variables" / "variables.index").is_file():
        raise ImportRefused(
            f"{folder} has no variables (variables/variables.index is missing): "
            "the weights are not in this SavedModel"
        )
    unreadable = (tf.errors.OpError, ValueError, IndexError, OSError, RuntimeError)
    try:
        reader = tf.train.load_checkpoint(str(folder / "variables" / "variables"))
        shapes = reader.get_variable_to_shape_map()
    except unreadable as exc:
        raise ImportRefused(f"cannot read the variables of {folder}: {first_line(exc)}") from None
    missing = sorted(set(expected) - set(shapes))
    if missing:
        raise ImportRefused(
            f"{folder} is not the MARCO model: {len(missing)} of its {len(expected)} variables "
            f"are missing (e.g. {missing[0]})"
        )
    for name, shape in expected.items():
        if tuple(shapes[name]) != shape:
            raise ImportRefused(
                f"{folder} is not the MARCO model: {name} has shape {tuple(shapes[name])}, "
                f"MARCO's is {shape}"
            )
    try:
        return {name: reader.get_tensor(name) for name in expected}
    except unreadable as exc:
        raise ImportRefused(f"cannot read the variables of {folder}: {first_line(exc)}") from None


def official_probabilities(folder: Path, images: Sequence[bytes]) -> tuple[str, np.ndarray]:
    """(signature name, (N, 4) probabilities in MARCO4_LABELS order) from the official graph."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), tf1.Session(graph=graph) as session:
        try:
            meta = tf1.saved_model.loader.load(session, ["serve"], str(folder))
        except (tf.errors.OpError, RuntimeError, ValueError, OSError, KeyError) as exc:
            raise ImportRefused(f"cannot load {folder}: {first_line(exc)}") from None
        name, signature = _marco_signature(folder, meta.signature_def)
        fetch = {k: signature.outputs[k].name for k in (SCORES_KEY, CLASSES_KEY)}
        rows = []
        for start in range(0, len(images), BATCH):
            feed = {signature.inputs[INPUT_KEY].name: list(images[start : start + BATCH])}
            try:
                out = session.run(fetch, feed)
            except tf.errors.OpError as exc:
                reason = first_line(exc)
                raise ImportRefused(f"{folder} fails on a sample image: {reason}") from None
            rows.append(_by_label(folder, out[SCORES_KEY], out[CLASSES_KEY]))
    return name, np.concatenate(rows)


def _marco_signature(folder: Path, signatures: Any) -> tuple[str, Any]:
    for name in SIGNATURES:
        if name in signatures:
            signature = signatures[name]
            if INPUT_KEY in signature.inputs and {SCORES_KEY, CLASSES_KEY} <= set(
                signature.outputs
            ):
                return name, signature
    raise ImportRefused(
        f"{folder} is not the MARCO model: no serving signature "
        f"({INPUT_KEY} -> {SCORES_KEY}, {CLASSES_KEY}); it has {sorted(signatures)}"
    )


def _by_label(folder: Path, scores: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The signature's top-k sorted scores put back into MARCO4_LABELS order."""
    probabilities = np.zeros((len(scores), len(MARCO4_LABELS)), dtype=np.float32)
    for i, (row_scores, row_classes) in enumerate(zip(scores, classes, strict=True)):
        labels = [c.decode() if isinstance(c, bytes) else str(c) for c in row_classes]
        if sorted(labels) != sorted(MARCO4_LABELS):
            raise ImportRefused(
                f"{folder} is not the MARCO model: its classes are {labels}, "
                f"not {list(MARCO4_LABELS)}"
            )
        for label, score in zip(labels, row_scores, strict=True):
            probabilities[i, MARCO4_LABELS.index(label)] = score
    return probabilities


# --- our model ------------------------------------------------------------------------------


def keras_probabilities(model: Any, images: Sequence[bytes]) -> np.ndarray:
    """(N, 4) probabilities of the Keras network through the shared TF preprocessing."""
    import tensorflow as tf

    from marco_svc.nets.architectures import architecture
    from marco_svc.nets.marco_inception import ARCHITECTURE
    from marco_svc.nets.preprocessing import from_spec

    preprocessing = from_spec(architecture(ARCHITECTURE).preprocessing)
    prep = tf.function(preprocessing.tf_from_bytes, input_signature=[tf.TensorSpec([], tf.string)])
    forward = tf.function(lambda x: model(x, training=False)[MARCO4], reduce_retracing=True)
    rows = []
    for start in range(0, len(images), BATCH):
        batch = tf.stack([prep(data) for data in images[start : start + BATCH]])
        rows.append(forward(batch).numpy())
    return np.concatenate(rows)


def sample_images(count: int = 8, seed: int = 2018) -> list[bytes]:
    """Deterministic JPEGs of drop-like scenes and noise, in several sizes and aspect ratios."""
    sizes = [(1224, 1024), (1280, 960), (640, 480), (599, 599), (480, 640), (320, 240)]
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        width, height = sizes[i % len(sizes)]
        if i % 4 == 3:  # plain noise
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            image = Image.fromarray(pixels)
        else:  # a lit well, a darker drop, needles or specks inside
            base = rng.integers(150, 230)
            image = Image.new("RGB", (width, height), (base, base, base - 10))
            draw = ImageDraw.Draw(image)
            cx, cy, r = width / 2, height / 2, min(width, height) * rng.uniform(0.25, 0.4)
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(base - 40,) * 3, outline=60)
            for _ in range(int(rng.integers(0, 30))):
                x, y = cx + rng.uniform(-r, r) * 0.7, cy + rng.uniform(-r, r) * 0.7
                dx, dy = rng.normal(0, r / 8, 2)
                draw.line((x, y, x + dx, y + dy), fill=int(rng.integers(20, 250)), width=2)
            noise = rng.normal(0, 6, (height, width, 3))
            pixels = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255)
            image = Image.fromarray(pixels.astype(np.uint8))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def compare(folder: Path, model: Any, images: Sequence[bytes]) -> tuple[str, Comparison]:
    """Run both on the images; refuse unless they agree within TOLERANCE."""
    signature, official = official_probabilities(folder, images)
    ours = keras_probabilities(model, images)
    difference = float(np.max(np.abs(official - ours)))
    comparison = Comparison(len(images), difference, (float(official.min()), float(official.max())))
    log.info("compared on %d images: max |difference| %.3g", len(images), difference)
    if not difference <= TOLERANCE:
        raise ImportRefused(
            f"the Keras network does not reproduce {folder}: max |difference| of probabilities "
            f"{difference:.3g} > {TOLERANCE:g} on {len(images)} images"
        )
    return signature, comparison


@dataclass(frozen=True)
class Verified:
    """The official model rebuilt as our Keras network, and the evidence that it reproduces."""

    model: keras.Model
    signature: str
    comparison: Comparison
    variables_sha256: str
    saved_model_sha256: str


def rebuild_and_verify(
    source: Path, images: Sequence[bytes], progress: Callable[[str], None] = log.info
) -> Verified:
    """Copy the official variables onto `build_marco_inception()` and compare both on
    `images`; ImportRefused when the source is not MARCO or does not reproduce."""
    from marco_svc.nets.marco_inception import build_marco_inception
    from marco_svc.nets.marco_inception import official_variables as variable_map

    if not images:
        raise ImportRefused("no sample images to compare on")
    with saved_model_folder(source) as folder:
        progress(f"reading the variables of {folder}")
        model = build_marco_inception()
        targets = variable_map(model)
        values = read_official_variables(folder, {n: tuple(v.shape) for n, v in targets.items()})
        for official_name, variable in targets.items():
            variable.assign(values[official_name])
        progress(f"comparing with the official graph on {len(images)} images")
        signature, comparison = compare(folder, model, images)
        return Verified(
            model,
            signature,
            comparison,
            sha256_of(folder / "variables"),
            sha256_of(folder / "saved_model.pb"),
        )
