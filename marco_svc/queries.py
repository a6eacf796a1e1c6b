"""Read-side queries shared by the CLI and the REST API; each returns plain JSON-ready dicts."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload, selectinload

from marco_svc.db.models import (
    IMAGE_STATUSES,
    Drop,
    HumanScore,
    Image,
    Inspection,
    ModelVersion,
    Plate,
    Score,
)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def score_dict(score: Score | None) -> dict[str, Any] | None:
    if score is None:
        return None
    return {
        "model": f"{score.model_version.name}:{score.model_version.version}",
        "top_class": score.top_class,
        "p_crystal": score.p_crystal,
        "hit": score.hit,
        "probabilities": score.probabilities,
        "rule": score.rule,
        "quality": score.quality,
        "scored_at": _iso(score.updated_at),
    }


def latest_scores(session: Session, image_ids: Iterable[int]) -> dict[int, Score]:
    """Per image: the active model's score, else the most recent one."""
    ids = list(image_ids)
    if not ids:
        return {}
    rows = session.scalars(
        select(Score)
        .join(ModelVersion)
        .options(joinedload(Score.model_version))
        .where(Score.image_id.in_(ids))
        .order_by(Score.image_id, ModelVersion.active, Score.updated_at, Score.id)
    )
    best: dict[int, Score] = {}
    for score in rows:  # ordered so the preferred score comes last
        best[score.image_id] = score
    return best


_IMAGE_LOADS = (
    selectinload(Image.inspection).selectinload(Inspection.plate),
    selectinload(Image.drop),
)


def image_dict(image: Image, score: Score | None) -> dict[str, Any]:
    inspection, drop = image.inspection, image.drop
    return {
        "id": image.id,
        "path": image.uri,
        "barcode": inspection.plate.barcode if inspection else None,
        "well": drop.well if drop else None,
        "drop": drop.drop_number if drop else None,
        "inspection": {
            "id": inspection.id,
            "imaged_at": _iso(inspection.imaged_at),
            "imager": inspection.imager,
            "external_id": inspection.external_id,
        }
        if inspection
        else None,
        "imaging_mode": image.imaging_mode,
        "version": image.version,
        "sha256": image.sha256,
        "width": image.width,
        "height": image.height,
        "status": image.status,
        "error": image.error,
        "created_at": _iso(image.created_at),
        "score": score_dict(score),
    }


def plate_summary(plate: Plate, image_count: int) -> dict[str, Any]:
    return {
        "barcode": plate.barcode,
        "plate_type": plate.plate_type,
        "wells": plate.wells,
        "drops_per_well": plate.drops,
        "image_count": image_count,
        "created_at": _iso(plate.created_at),
    }


def list_plates(session: Session) -> list[dict[str, Any]]:
    counts = (
        select(Inspection.plate_id, func.count(Image.id).label("n"))
        .join(Image, Image.inspection_id == Inspection.id)
        .group_by(Inspection.plate_id)
        .subquery()
    )
    rows = session.execute(
        select(Plate, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.plate_id == Plate.id)
        .order_by(Plate.barcode)
    )
    return [plate_summary(plate, n) for plate, n in rows]


def plate_detail(session: Session, barcode: str) -> dict[str, Any] | None:
    """The plate, its inspections, and every image with well, drop, status and latest score."""
    plate = session.scalar(select(Plate).where(Plate.barcode == barcode))
    if plate is None:
        return None
    images = list(
        session.scalars(
            select(Image)
            .options(*_IMAGE_LOADS)
            .join(Inspection, Image.inspection_id == Inspection.id)
            .join(Drop, Image.drop_id == Drop.id)
            .where(Inspection.plate_id == plate.id)
            .order_by(
                Inspection.imaged_at,
                Drop.row_index,
                Drop.column_number,
                Drop.drop_number,
                Image.version,
            )
        )
    )
    scores = latest_scores(session, (image.id for image in images))
    inspections = session.scalars(
        select(Inspection).where(Inspection.plate_id == plate.id).order_by(Inspection.imaged_at)
    )
    return {
        **plate_summary(plate, len(images)),
        "inspections": [
            {
                "id": i.id,
                "imaged_at": _iso(i.imaged_at),
                "imager": i.imager,
                "external_id": i.external_id,
            }
            for i in inspections
        ],
        "images": [image_dict(image, scores.get(image.id)) for image in images],
    }


def list_images(
    session: Session, status: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    if status is not None and status not in IMAGE_STATUSES:
        raise ValueError(f"unknown status {status!r} (one of {', '.join(IMAGE_STATUSES)})")
    query = select(Image).options(*_IMAGE_LOADS).order_by(Image.id)
    if status is not None:
        query = query.where(Image.status == status)
    if limit is not None:
        query = query.limit(limit)
    images = list(session.scalars(query))
    scores = latest_scores(session, (image.id for image in images))
    return [image_dict(image, scores.get(image.id)) for image in images]


def image_detail(session: Session, image_id: int) -> dict[str, Any] | None:
    """One image with every model's score and every human label."""
    image = session.scalar(select(Image).options(*_IMAGE_LOADS).where(Image.id == image_id))
    if image is None:
        return None
    scores = session.scalars(
        select(Score)
        .options(joinedload(Score.model_version))
        .where(Score.image_id == image_id)
        .order_by(Score.id)
    )
    humans = session.scalars(
        select(HumanScore).where(HumanScore.image_id == image_id).order_by(HumanScore.id)
    )
    best = latest_scores(session, [image_id]).get(image_id)
    return {
        **image_dict(image, best),
        "scores": [score_dict(score) for score in scores],
        "human_scores": [
            {
                "label": h.label,
                "scheme": h.scheme,
                "who": h.who,
                "source": h.source,
                "at": _iso(h.created_at),
            }
            for h in humans
        ],
    }


def hits_since(session: Session, version_id: int | None, cursor: int, limit: int) -> dict[str, Any]:
    """Hits of one model version (the one that scores now) with a score id above `cursor`,
    oldest first, and the next cursor. Only new scores move the cursor; a hit re-decided
    later is not sent again."""
    rows = list(
        session.scalars(
            select(Score)
            .options(joinedload(Score.model_version))
            .where(Score.model_version_id == version_id, Score.hit, Score.id > cursor)
            .order_by(Score.id)
            .limit(limit)
        )
    )
    images = {
        image.id: image
        for image in session.scalars(
            select(Image).options(*_IMAGE_LOADS).where(Image.id.in_([s.image_id for s in rows]))
        )
    }
    return {
        "hits": [image_dict(images[s.image_id], s) for s in rows],
        "cursor": rows[-1].id if rows else cursor,
    }
