"""Read-side queries shared by the CLI and the REST API; each returns plain JSON-ready dicts."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
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
from marco_svc.scoring.confidence import band


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def score_dict(score: Score | None) -> dict[str, Any] | None:
    if score is None:
        return None
    return {
        "id": score.id,
        "model": f"{score.model_version.name}:{score.model_version.version}",
        "model_version_id": score.model_version_id,
        "top_class": score.top_class,
        "p_crystal": score.p_crystal,
        "hit": score.hit,
        "probabilities": score.probabilities,
        "band": band(score.probabilities, (score.rule or {}).get("unknown_below")),
        "rule": score.rule,
        "quality": score.quality,
        "source": score.source,
        "scored_at": iso(score.updated_at),
    }


# A score's model as answers name it: only its name and version are loaded (its card,
# labels and metrics are JSON that would be parsed for every row).
SCORE_MODEL = joinedload(Score.model_version).load_only(ModelVersion.name, ModelVersion.version)


# Images of a plate or inspection in well order: row, column, drop, then mode and version.
WELL_ORDER = (
    Drop.row_index,
    Drop.column_number,
    Drop.drop_number,
    Image.imaging_mode,
    Image.version,
    Image.id,
)


def latest_rank() -> Any:
    """1 for each image's latest score (as `latest_scores` picks it: the active model's,
    else the newest), in a query that joins Score to ModelVersion."""
    return (
        func.row_number()
        .over(
            partition_by=Score.image_id,
            order_by=(ModelVersion.active.desc(), Score.updated_at.desc(), Score.id.desc()),
        )
        .label("rank")
    )


def latest_scores(session: Session, image_ids: Iterable[int]) -> dict[int, Score]:
    """Per image: the active model's score, else the most recent one."""
    ids = list(image_ids)
    if not ids:
        return {}
    rows = session.scalars(
        select(Score)
        .join(ModelVersion)
        .options(SCORE_MODEL)
        .where(Score.image_id.in_(ids))
        .order_by(Score.image_id, ModelVersion.active, Score.updated_at, Score.id)
    )
    best: dict[int, Score] = {}
    for score in rows:  # ordered so the preferred score comes last
        best[score.image_id] = score
    return best


IMAGE_LOADS = (
    selectinload(Image.inspection).selectinload(Inspection.plate),
    selectinload(Image.drop),
)


def image_dict(image: Image, score: Score | None, with_path: bool = True) -> dict[str, Any]:
    """An image as JSON; `with_path=False` leaves out its path on the server."""
    inspection, drop = image.inspection, image.drop
    body = {
        "id": image.id,
        "path": image.uri,
        "barcode": inspection.plate.barcode if inspection else None,
        "well": drop.well if drop else None,
        "drop": drop.drop_number if drop else None,
        "inspection": {
            "id": inspection.id,
            "imaged_at": iso(inspection.imaged_at),
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
        "created_at": iso(image.created_at),
        "score": score_dict(score),
    }
    if not with_path:
        del body["path"]
    return body


def plate_dict(plate: Plate) -> dict[str, Any]:
    return {
        "barcode": plate.barcode,
        "plate_type": plate.plate_type,
        "wells": plate.wells,
        "drops_per_well": plate.drops,
        "created_at": iso(plate.created_at),
    }


def plate_summary(plate: Plate, image_count: int) -> dict[str, Any]:
    return {**plate_dict(plate), "image_count": image_count}


def placed_images(plate_id: int | None = None, inspection_id: int | None = None) -> Select:
    """Images that have a drop, of one plate or inspection, in time then well order."""
    query = (
        select(Image)
        .options(*IMAGE_LOADS)
        .join(Inspection, Image.inspection_id == Inspection.id)
        .join(Drop, Image.drop_id == Drop.id)
        .order_by(Inspection.imaged_at, *WELL_ORDER)
    )
    if plate_id is not None:
        query = query.where(Inspection.plate_id == plate_id)
    if inspection_id is not None:
        query = query.where(Image.inspection_id == inspection_id)
    return query


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
    images = list(session.scalars(placed_images(plate_id=plate.id)))
    scores = latest_scores(session, (image.id for image in images))
    inspections = session.scalars(
        select(Inspection).where(Inspection.plate_id == plate.id).order_by(Inspection.imaged_at)
    )
    return {
        **plate_summary(plate, len(images)),
        "inspections": [
            {
                "id": i.id,
                "imaged_at": iso(i.imaged_at),
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
    query = select(Image).options(*IMAGE_LOADS).order_by(Image.id)
    if status is not None:
        query = query.where(Image.status == status)
    if limit is not None:
        query = query.limit(limit)
    images = list(session.scalars(query))
    scores = latest_scores(session, (image.id for image in images))
    return [image_dict(image, scores.get(image.id)) for image in images]


def human_score_dict(human: HumanScore) -> dict[str, Any]:
    return {
        "id": human.id,
        "image_id": human.image_id,
        "label": human.label,
        "scheme": human.scheme,
        "who": human.who,
        "source": human.source,
        "at": iso(human.created_at),
        "updated_at": iso(human.updated_at),
    }


def image_detail(session: Session, image_id: int, with_path: bool = True) -> dict[str, Any] | None:
    """One image with every model's score and every human label."""
    image = session.scalar(select(Image).options(*IMAGE_LOADS).where(Image.id == image_id))
    if image is None:
        return None
    scores = session.scalars(
        select(Score).options(SCORE_MODEL).where(Score.image_id == image_id).order_by(Score.id)
    )
    humans = session.scalars(
        select(HumanScore).where(HumanScore.image_id == image_id).order_by(HumanScore.id)
    )
    best = latest_scores(session, [image_id]).get(image_id)
    return {
        **image_dict(image, best, with_path),
        "scores": [score_dict(score) for score in scores],
        "human_scores": [human_score_dict(h) for h in humans],
    }
