"""The scoring engine: pending images in batches -> decode, preprocess, model, rules, quality.

One engine holds one loaded model version. It scores what `store.pending_images` says is
left for that version, so it resumes after a crash and rescores in the background when
another version is activated. An image that cannot be decoded becomes a failed image
with its reason; the batch goes on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import select

from marco_svc import model_store
from marco_svc.db.models import ModelVersion
from marco_svc.model_store import StoredModel
from marco_svc.nets.runner import Runner, open_runner, top_label
from marco_svc.runtime import Runtime
from marco_svc.scoring.lab_rules import LabRules
from marco_svc.scoring.quality import assess
from marco_svc.scoring.store import (
    PendingImage,
    ScoreResult,
    mark_failed,
    pending_images,
    save_scores,
)

log = logging.getLogger(__name__)


class NoModel(RuntimeError):
    """No model is configured, active or shipped."""


@dataclass(frozen=True)
class Prepared:
    image: PendingImage
    x: np.ndarray
    quality: dict
    seconds: float


def quality_of(data: bytes, full_width: int | None = None) -> dict:
    """Quality flags from a half-size decode (the checks work on a 512-pixel copy anyway)."""
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_2)
    if pixels is None:
        raise ValueError("OpenCV cannot decode the image")
    report = assess(cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)).to_dict()
    drop = report["drop"]
    if drop and full_width:
        factor = full_width / pixels.shape[1]
        for key in ("cx", "cy", "radius"):
            drop[key] = round(drop[key] * factor, 1)
    return report


class ScoringEngine:
    """Scores pending images with one model version of the store."""

    def __init__(
        self,
        runtime: Runtime,
        model: StoredModel | None = None,
        artifact: str | None = None,
        batch_size: int = 16,
    ) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.model = model or self._resolve()
        self.version_id = model_store.upsert_version(runtime.db, self.model)
        if model_store.active_version(runtime.db) is None:
            model_store.activate(runtime.db, self.model.ref)
        self.runner: Runner = open_runner(
            self.model.card, self.model.folder, artifact or settings.scoring_artifact or None
        )
        self.rules = LabRules.parse(settings.crystal_rule, settings.lab_rules)
        self.batch_size = batch_size

    def _resolve(self) -> StoredModel:
        try:
            return model_store.resolve(self.runtime.settings, db=self.runtime.db)
        except model_store.ModelStoreError as exc:
            raise NoModel(str(exc)) from None

    @property
    def version(self) -> ModelVersion:
        with self.runtime.db.session() as session:
            return session.get(ModelVersion, self.version_id)

    def is_current(self) -> bool:
        """False once another version was activated (or the setting names another model)."""
        with self.runtime.db.session() as session:
            active = session.scalar(select(ModelVersion.id).where(ModelVersion.active))
        return active in (None, self.version_id)

    def _prepare(self, image: PendingImage) -> Prepared | str:
        """Network input and quality report, or the reason the image cannot be scored."""
        started = time.perf_counter()
        try:
            data = Path(image.uri).read_bytes()
        except OSError as exc:
            return f"cannot read the image file: {exc.strerror or exc}"
        try:
            x = self.runner.preprocess(data)
            quality = quality_of(data, image.width)
        except Exception as exc:  # any decoder error is the image's fault
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return f"cannot decode the image: {first}"
        return Prepared(image, x, quality, time.perf_counter() - started)

    def score(self, images: list[PendingImage]) -> int:
        """Score one batch; returns how many scores were stored."""
        prepared: list[Prepared] = []
        for image in images:
            outcome = self._prepare(image)
            if isinstance(outcome, str):
                log.warning("image %s failed: %s", image.image_id, outcome)
                mark_failed(self.runtime.db, image.image_id, outcome)
            else:
                prepared.append(outcome)
        if not prepared:
            return 0
        started = time.perf_counter()
        outputs = self.runner.predict(np.stack([p.x for p in prepared]))
        share = (time.perf_counter() - started) / len(prepared)
        rows = self.runner.label_probabilities(outputs)
        results = [
            ScoreResult(
                p.image.image_id,
                probs,
                top_label(self.model.card, probs),
                p.quality,
                round((p.seconds + share) * 1000, 2),
            )
            for p, probs in zip(prepared, rows, strict=True)
        ]
        barcodes = {p.image.image_id: p.image.barcode for p in prepared}
        return save_scores(self.runtime.db, self.version, results, self.rules, barcodes)

    def run_pending(self, limit: int | None = None) -> int:
        """Score until nothing is pending (or `limit` images are done); returns the count."""
        done = 0
        while limit is None or done < limit:
            size = self.batch_size if limit is None else min(self.batch_size, limit - done)
            with self.runtime.db.session() as session:
                batch = pending_images(session, self.version_id, size)
            if not batch:
                break
            self.score(batch)  # each image ends scored or failed, so the next query moves on
            done += len(batch)
        return done
