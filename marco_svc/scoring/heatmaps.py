"""SmoothGrad heatmaps of stored images: computed on demand or ahead of time for hits,
cached as PNG files under `<data_dir>/heatmaps/` and recorded as Heatmap rows keyed by
(image, model version, class, parameters).

Gradients need the model's Keras artifact; a model with only TFLite files has no heatmaps.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from marco_svc import registry
from marco_svc.db.models import Heatmap, Image, ImageStatus, ModelVersion, Score
from marco_svc.file_store import atomic_write
from marco_svc.ingest import REMOTE_SCHEME
from marco_svc.labels import CRYSTAL_CLASSES_10, CRYSTALS, MARCO4, scheme_of_label
from marco_svc.nets.preprocessing import from_spec
from marco_svc.nets.runner import load_keras
from marco_svc.registry import StoredModel
from marco_svc.runtime import Runtime
from marco_svc.scoring.saliency import SmoothGradParams, overlay, png_bytes, smoothgrad

_LOCK = threading.Lock()


class HeatmapError(ValueError):
    """A heatmap that cannot be made (unknown image or class, no Keras artifact, ...)."""


class HeatmapModelError(HeatmapError):
    """The model's network cannot be loaded (a fault of the stored model, not the request)."""


@dataclass(frozen=True)
class HeatmapFile:
    path: Path
    class_label: str
    params: dict[str, Any]
    cached: bool


def params_key(params: SmoothGradParams) -> str:
    text = json.dumps(params.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def keras_model(model: StoredModel) -> Any:
    """The full Keras network (logits included) of a stored model, loaded once."""
    if "keras" not in model.card.artifacts:
        raise HeatmapError(f"{model.ref} has no Keras artifact, so no gradients for heatmaps")
    path = model.folder / model.card.artifacts["keras"].file
    try:
        return load_keras(path)
    except (OSError, ValueError) as exc:
        raise HeatmapModelError(f"{model.ref}: its Keras network cannot be loaded: {exc}") from None


def default_class(score: Score | None, heads: dict[str, list[str]]) -> str:
    """For a hit: the crystal class (Crystals, or the likeliest ten-way crystal class);
    otherwise the top class; without a score: Crystals or the first crystal class."""
    crystal_classes = [CRYSTALS] if MARCO4 in heads else list(CRYSTAL_CLASSES_10)
    if score is None or score.hit:
        probabilities = score.probabilities if score else {}
        return max(crystal_classes, key=lambda label: probabilities.get(label, 0.0))
    return score.top_class


def _stored_model(runtime: Runtime, version: ModelVersion) -> StoredModel:
    return registry.find(runtime.settings, f"{version.name}:{version.version}")


def _grey(x: np.ndarray) -> np.ndarray:
    """The network input ([-1, 1] by every registered preprocessing) as a grey uint8 image."""
    grey = x.mean(axis=-1) if x.ndim == 3 else x
    return np.clip((grey + 1.0) * 127.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class _Wanted:
    label: str
    scheme: str
    heads: dict[str, list[str]]
    params: SmoothGradParams
    key: str
    uri: str
    cached: HeatmapFile | None


def _wanted(
    runtime: Runtime,
    image_id: int,
    version: ModelVersion,
    class_label: str | None,
    params: SmoothGradParams | None,
) -> _Wanted:
    """Which heatmap a request means (the class checked), and its cached file if any."""
    params = params or SmoothGradParams(n=runtime.settings.smoothgrad_samples)
    key = params_key(params)
    with runtime.db.session() as session:
        image = session.get(Image, image_id)
        if image is None:
            raise HeatmapError(f"no image {image_id}")
        if image.status == ImageStatus.FAILED:
            raise HeatmapError(f"image {image_id} failed: {image.error}")
        score = session.scalar(
            select(Score).where(Score.image_id == image_id, Score.model_version_id == version.id)
        )
        heads = version.card.get("heads", {})
        label = class_label or default_class(score, heads)
        try:
            scheme = scheme_of_label(label)
        except ValueError:
            scheme = None
        if scheme not in heads or label not in heads[scheme]:
            known = ", ".join(label for labels in heads.values() for label in labels)
            raise HeatmapError(f"{version.name}:{version.version} has no class {label!r} ({known})")
        row = _heatmap_row(session, image_id, version.id, label, key)
        cached = None
        if row is not None and Path(row.path).is_file():
            cached = HeatmapFile(Path(row.path), label, row.params, True)
        return _Wanted(label, scheme, heads, params, key, image.uri, cached)


def cached(
    runtime: Runtime, image_id: int, version: ModelVersion, class_label: str | None = None
) -> HeatmapFile | None:
    """The cached heatmap PNG, or None when it must be computed (HeatmapError when it
    cannot be: unknown image or class, failed image)."""
    return _wanted(runtime, image_id, version, class_label, None).cached


def compute(
    runtime: Runtime,
    image_id: int,
    version: ModelVersion,
    class_label: str | None = None,
    params: SmoothGradParams | None = None,
) -> HeatmapFile:
    """The heatmap PNG for one image, from the cache or computed now."""
    wanted = _wanted(runtime, image_id, version, class_label, params)
    if wanted.cached is not None:
        return wanted.cached
    label, scheme, heads, params, key, uri = (
        wanted.label,
        wanted.scheme,
        wanted.heads,
        wanted.params,
        wanted.key,
        wanted.uri,
    )
    model = _stored_model(runtime, version)
    preprocessing = from_spec(model.card.preprocessing)
    try:
        data = Path(uri).read_bytes()
    except OSError as exc:
        raise HeatmapError(f"cannot read image {image_id}: {exc.strerror or exc}") from None
    with _LOCK:  # one gradient computation at a time: it uses every core anyway
        network = keras_model(model)
        x = preprocessing.np_from_bytes(data)
        heatmap = smoothgrad(network, x, scheme, heads[scheme].index(label), params)
    path = (
        runtime.settings.resolved_data_dir
        / "heatmaps"
        / str(image_id)
        / f"{version.id}-{label.replace(' ', '_').replace('&', 'and')}-{key}.png"
    )
    atomic_write(path, png_bytes(overlay(heatmap, _grey(x))), sync=False)
    with runtime.db.session() as session:
        row = _heatmap_row(session, image_id, version.id, label, key)
        if row is None:
            session.add(
                Heatmap(
                    image_id=image_id,
                    model_version_id=version.id,
                    class_label=label,
                    params_key=key,
                    params=params.to_dict(),
                    path=str(path),
                )
            )
        else:
            row.path = str(path)
    return HeatmapFile(path, label, params.to_dict(), False)


def _heatmap_row(
    session: Session, image_id: int, version_id: int, label: str, key: str
) -> Heatmap | None:
    return session.scalar(
        select(Heatmap).where(
            Heatmap.image_id == image_id,
            Heatmap.model_version_id == version_id,
            Heatmap.class_label == label,
            Heatmap.params_key == key,
        )
    )


def next_hit_without_heatmap(runtime: Runtime, version: ModelVersion) -> int | None:
    """A hit of this version that has no heatmap yet (newest first), for ahead-of-time work;
    never an edge agent's image (its file stays on the imager PC)."""
    with runtime.db.session() as session:
        has_map = exists().where(
            Heatmap.image_id == Score.image_id, Heatmap.model_version_id == version.id
        )
        return session.scalar(
            select(Score.image_id)
            .join(Image, Image.id == Score.image_id)
            .where(
                Score.model_version_id == version.id,
                Score.hit,
                Image.status != ImageStatus.FAILED,
                ~Image.uri.startswith(REMOTE_SCHEME, autoescape=True),
                ~has_map,
            )
            .order_by(Score.id.desc())
            .limit(1)
        )
