"""The scoring engine: pending images in batches -> decode, preprocess, model, rules, quality.

One engine holds one loaded model version. It scores what `store.pending_images` says is
left for that version, so it resumes after a crash and rescores in the background when
another version is activated. An image that cannot be decoded becomes a failed image
with its reason; the batch goes on.
"""

from __future__ import annotations

import logging
from pathlib import Path

from marco_svc import registry
from marco_svc.db.models import ModelVersion
from marco_svc.nets.runner import Runner, open_runner
from marco_svc.registry import StoredModel
from marco_svc.runtime import Runtime
from marco_svc.scoring.batch import Limits, score_batch
from marco_svc.scoring.lab_rules import LabRules
from marco_svc.scoring.quality import quality_of
from marco_svc.scoring.store import (
    PendingImage,
    ScoreResult,
    mark_failed,
    pending_images,
    save_scores,
)
from marco_svc.scoring.threads import limit_threads

log = logging.getLogger(__name__)


class NoModel(RuntimeError):
    """No model is configured, active or shipped."""


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
        self.version_id = registry.upsert_version(runtime.db, self.model)
        if settings.scoring_threads:
            limit_threads(settings.scoring_threads)
        self.runner: Runner = open_runner(
            self.model.card,
            self.model.folder,
            artifact or settings.scoring_artifact or None,
            threads=settings.scoring_threads or None,
        )
        self.rules = LabRules.parse(settings.crystal_rule, settings.lab_rules)
        self.limits = Limits(settings.max_image_pixels)
        self.batch_size = batch_size

    def _resolve(self) -> StoredModel:
        try:
            return registry.resolve(self.runtime.settings, db=self.runtime.db)
        except registry.ModelStoreError as exc:
            raise NoModel(str(exc)) from None

    @property
    def version(self) -> ModelVersion:
        with self.runtime.db.session() as session:
            return session.get(ModelVersion, self.version_id)

    def is_current(self) -> bool:
        """Whether this engine's model is still the one that scores now (False once another
        version is activated, or the setting names another model)."""
        return registry.scoring_version_id(self.runtime.settings, self.runtime.db) in (
            None,
            self.version_id,
        )

    def _read(self, images: list[PendingImage]) -> list[tuple[PendingImage, bytes]]:
        """Each image's bytes; an unreadable file is marked failed with its reason."""
        read = []
        for image in images:
            try:
                read.append((image, Path(image.uri).read_bytes()))
            except OSError as exc:
                self._fail(image, f"cannot read the image file: {exc.strerror or exc}")
        return read

    def _fail(self, image: PendingImage, reason: str) -> None:
        log.warning("image %s failed: %s", image.image_id, reason)
        mark_failed(self.runtime.db, image.image_id, reason)

    def score(self, images: list[PendingImage]) -> int:
        """Score one batch; returns how many scores were stored."""
        scored, failed = score_batch(
            self.runner,
            self._read(images),
            self.limits,
            lambda image, data: quality_of(data, image.width),
        )
        for failure in failed:
            self._fail(failure.key, f"cannot decode the image: {failure.reason}")
        if not scored:
            return 0
        results = [
            ScoreResult(s.key.image_id, s.probabilities, s.top, s.extra, round(s.seconds * 1000, 2))
            for s in scored
        ]
        barcodes = {s.key.image_id: s.key.barcode for s in scored}
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
