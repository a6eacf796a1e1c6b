"""The scoring and heatmap jobs: the functions the in-process scorer and the Celery workers
both run, so there is one code path whoever schedules them.

Every job is idempotent. Scoring skips images the model that scores now has scored
already (and `save_scores` keeps the first score when two runs race); a heatmap that is
cached is not computed again. A job run twice (a task redelivered after its worker died,
an image dispatched again) therefore stores nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select

from marco_svc.db.models import Heatmap, ModelVersion, Score
from marco_svc.runtime import Runtime
from marco_svc.scoring import heatmaps
from marco_svc.scoring.engine import ScoringEngine
from marco_svc.scoring.saliency import SmoothGradParams
from marco_svc.scoring.store import PendingImage, pending_images

log = logging.getLogger(__name__)


class CurrentEngine:
    """The engine of the model that scores now: loaded on first use, loaded again once
    another version is activated (or the `model` setting names another)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.engine: ScoringEngine | None = None

    def get(self) -> ScoringEngine:
        """The current engine (raises `engine.NoModel` when no model can score)."""
        if self.engine is None or not self.engine.is_current():
            settings = self.runtime.settings
            self.engine = ScoringEngine(self.runtime, batch_size=settings.scoring_batch_size)
            log.info("scoring with %s (%s)", self.engine.model.ref, self.engine.runner.fmt)
        return self.engine


@dataclass(frozen=True)
class Scored:
    """What one scoring job did: images it scored now, those it found done or not scorable
    (scored before, failed, an edge image), and the hits among the scored ones."""

    scored: int
    skipped: int
    hits: list[int]


def score_images(engine: ScoringEngine, image_ids: Sequence[int]) -> Scored:
    """Score those of `image_ids` that are still pending for the engine's model version."""
    wanted = sorted(set(image_ids))
    with engine.runtime.db.session() as session:
        pending = pending_images(session, engine.version_id, len(wanted) or 1, among=wanted)
    scored = 0
    for start in range(0, len(pending), engine.batch_size):
        scored += engine.score(pending[start : start + engine.batch_size])
    return Scored(scored, len(wanted) - scored, hits_without_heatmap(engine, pending))


def hits_without_heatmap(engine: ScoringEngine, images: Sequence[PendingImage]) -> list[int]:
    """Which of the just scored images are hits that want a heatmap made ahead of time
    (setting heatmaps_for_hits, and only a model with a Keras artifact can make one)."""
    if not images or not wants_heatmaps(engine):
        return []
    ids = [image.image_id for image in images]
    with engine.runtime.db.session() as session:
        return list(
            session.scalars(
                select(Score.image_id).where(
                    Score.image_id.in_(ids),
                    Score.model_version_id == engine.version_id,
                    Score.hit,
                    ~Score.image_id.in_(
                        select(Heatmap.image_id).where(
                            Heatmap.model_version_id == engine.version_id
                        )
                    ),
                )
            )
        )


def wants_heatmaps(engine: ScoringEngine) -> bool:
    return engine.runtime.settings.heatmaps_for_hits and "keras" in engine.model.card.artifacts


def make_heatmap(
    runtime: Runtime,
    image_id: int,
    version_id: int,
    class_label: str | None = None,
    samples: int | None = None,
) -> heatmaps.HeatmapFile:
    """The heatmap of one image by one model version, from the cache or computed now, with
    `samples` noisy copies (default: the setting smoothgrad_samples)."""
    with runtime.db.session() as session:
        version = session.get(ModelVersion, version_id)
    if version is None:
        raise heatmaps.HeatmapError(f"no model version {version_id}")
    params = SmoothGradParams(n=samples) if samples else None
    return heatmaps.compute(runtime, image_id, version, class_label, params)
