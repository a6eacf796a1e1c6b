"""Where scoring meets the database: what is pending, saving scores, re-deciding hits.

Pending = every image that is not failed and has no score from the given model version,
new images first; so scoring after a crash, or after a new version is activated, picks
up exactly what is left. An image whose file stays on an imager PC (an edge agent scored
it, `ingest.is_remote`) is never pending: the server cannot read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, case, exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from marco_svc import feed
from marco_svc.db.models import (
    Drop,
    Image,
    ImageStatus,
    Inspection,
    ModelVersion,
    Plate,
    Score,
    utcnow,
)
from marco_svc.db.session import Database
from marco_svc.ingest import REMOTE_SCHEME
from marco_svc.scoring.confidence import unknown_below
from marco_svc.scoring.lab_rules import LabRules
from marco_svc.scoring.rules import CrystalRule, decide


@dataclass(frozen=True)
class PendingImage:
    image_id: int
    uri: str
    barcode: str | None
    width: int | None


@dataclass(frozen=True)
class ScoreResult:
    """What the engine made of one image."""

    image_id: int
    probabilities: dict[str, float]
    top_class: str
    quality: dict[str, Any]
    latency_ms: float


def _pending(model_version_id: int) -> Select:
    """Images not failed, not scored by this version, and readable by the server."""
    scored = exists().where(Score.image_id == Image.id, Score.model_version_id == model_version_id)
    return select(Image.id).where(
        Image.status != ImageStatus.FAILED,
        ~scored,
        ~Image.uri.startswith(REMOTE_SCHEME, autoescape=True),
    )


def pending_images(
    session: Session,
    model_version_id: int,
    limit: int,
    among: Sequence[int] | None = None,
) -> list[PendingImage]:
    """Pending images (see the module): new ones first, then by id; only those of `among`
    when given (a task's images)."""
    query = (
        _pending(model_version_id)
        .add_columns(Image.uri, Plate.barcode, Image.width)
        .outerjoin(Inspection, Image.inspection_id == Inspection.id)
        .outerjoin(Plate, Inspection.plate_id == Plate.id)
    )
    if among is not None:
        query = query.where(Image.id.in_(list(among)))
    rows = session.execute(
        query.order_by(case((Image.status == ImageStatus.NEW, 0), else_=1), Image.id).limit(limit)
    )
    return [PendingImage(*row) for row in rows]


def pending_ids_after(
    session: Session, model_version_id: int, after_id: int, limit: int
) -> list[int]:
    """Ids of pending images above `after_id`, ascending: a dispatcher's walk in pages."""
    query = _pending(model_version_id).where(Image.id > after_id).order_by(Image.id).limit(limit)
    return list(session.scalars(query))


def mark_failed(db: Database, image_id: int, reason: str) -> None:
    with db.session() as session:
        session.execute(
            update(Image)
            .where(Image.id == image_id)
            .values(status=ImageStatus.FAILED, error=reason, updated_at=utcnow())
        )


def save_scores(
    db: Database,
    model: ModelVersion,
    results: Sequence[ScoreResult],
    rules: LabRules,
    barcodes: dict[int, str | None],
    source: str = "server",
) -> int:
    """Store one Score per (image, version) and mark the images scored; returns rows written.

    An image this version has scored already keeps its score and its feed place: a task
    delivered twice, or two workers racing on one image, store it once."""
    points = model.card.get("operating_points", {})
    below = unknown_below(model.card.get("calibration"))
    written = 0
    with db.session() as session:
        positions = feed.claim(session, feed.SCORES, len(results))
        for result in results:
            existing = session.scalar(
                select(Score.id).where(
                    Score.image_id == result.image_id, Score.model_version_id == model.id
                )
            )
            if existing is not None:
                continue
            rule = rules.for_barcode(barcodes.get(result.image_id))
            decision = decide(result.probabilities, rule, points, below)
            values = {
                "probabilities": result.probabilities,
                "top_class": result.top_class,
                "p_crystal": decision.p_crystal,
                "hit": decision.hit,
                "rule": decision.rule,
                "quality": result.quality,
                "latency_ms": result.latency_ms,
                "source": source,
                "feed_seq": next(positions),
            }
            try:
                with session.begin_nested():
                    session.add(
                        Score(image_id=result.image_id, model_version_id=model.id, **values)
                    )
            except IntegrityError:
                continue  # another worker stored it first
            written += 1
        session.execute(
            update(Image)
            .where(Image.id.in_([r.image_id for r in results]), Image.status == ImageStatus.NEW)
            .values(status=ImageStatus.SCORED, updated_at=utcnow())
        )
    return written


def redecide(db: Database, rules: LabRules, batch: int = 500) -> dict[str, int]:
    """Apply the configured rules to every stored score again: only hit and rule change
    (the rule records the card's `unknown_below` of now, so the band follows the card)."""
    counts = {"scores": 0, "changed": 0}
    last_id = 0
    while True:
        with db.session() as session:
            rows = session.execute(
                select(Score, Plate.barcode, ModelVersion.card)
                .join(ModelVersion, Score.model_version_id == ModelVersion.id)
                .join(Image, Score.image_id == Image.id)
                .outerjoin(Drop, Image.drop_id == Drop.id)
                .outerjoin(Plate, Drop.plate_id == Plate.id)
                .where(Score.id > last_id)
                .order_by(Score.id)
                .limit(batch)
            ).all()
            changed = []
            for score, barcode, card in rows:
                rule: CrystalRule = rules.for_barcode(barcode)
                card = card or {}
                decision = decide(
                    score.probabilities,
                    rule,
                    card.get("operating_points"),
                    unknown_below(card.get("calibration")),
                )
                if decision.hit != score.hit or decision.rule != score.rule:
                    score.hit, score.rule = decision.hit, decision.rule
                    changed.append(score)
                counts["scores"] += 1
                last_id = score.id
            # a re-decided score is a new result: it moves to the end of the feed
            with session.no_autoflush:  # the counter first, as every writer locks it
                positions = feed.claim(session, feed.SCORES, len(changed))
            for score, position in zip(changed, positions, strict=True):
                score.feed_seq = position
            counts["changed"] += len(changed)
        if len(rows) < batch:
            return counts
