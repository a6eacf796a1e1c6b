"""Paged read queries for the REST API and the web page: plates newest first, a plate's
inspections as a time course, an inspection's drops with their latest scores, images and
model versions. Each answers JSON-ready dicts and the `next` cursor (None on the last page).

Lists that only grow at one end (plates, images, model versions) page by id; a plate's
inspections and an inspection's drops (bounded by the plate) page by position.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from marco_svc.db.models import Image, ImageStatus, Inspection, ModelVersion, Plate, Score
from marco_svc.queries import (
    IMAGE_LOADS,
    image_dict,
    iso,
    latest_rank,
    latest_scores,
    placed_images,
    plate_dict,
)

Page = dict[str, Any]


def _page(rows: list[Any], limit: int, cursor_of: Any) -> tuple[list[Any], str | None]:
    """The first `limit` of `rows` (queried with limit + 1) and the cursor after them, or
    None when nothing follows."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, str(cursor_of(rows[-1]))


def _plate_row(plate: Plate, last_imaged: Any) -> dict[str, Any]:
    return {**plate_dict(plate), "last_imaged_at": iso(last_imaged)}


def plates_page(session: Session, search: str | None, limit: int, cursor: int) -> Page:
    """Plates newest first (by registration), optionally those whose barcode contains
    `search`."""
    last = (
        select(Inspection.plate_id, func.max(Inspection.imaged_at).label("at"))
        .group_by(Inspection.plate_id)
        .subquery()
    )
    query = (
        select(Plate, last.c.at)
        .outerjoin(last, last.c.plate_id == Plate.id)
        .order_by(Plate.id.desc())
        .limit(limit + 1)
    )
    if cursor:
        query = query.where(Plate.id < cursor)
    if search:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Plate.barcode.like(f"%{escaped}%", escape="\\"))
    rows, after = _page(session.execute(query).all(), limit, lambda row: row[0].id)
    return {"plates": [_plate_row(plate, at) for plate, at in rows], "next": after}


def find_plate(session: Session, barcode: str) -> Plate | None:
    return session.scalar(select(Plate).where(Plate.barcode == barcode))


def plate_overview(session: Session, plate: Plate) -> dict[str, Any]:
    """The plate with its counts: images by status, and over the latest score of each image
    of the newest inspection, images by top class and hits."""
    inspections = list(
        session.scalars(
            select(Inspection).where(Inspection.plate_id == plate.id).order_by(Inspection.imaged_at)
        )
    )
    statuses = dict(
        session.execute(
            select(Image.status, func.count())
            .join(Inspection, Image.inspection_id == Inspection.id)
            .where(Inspection.plate_id == plate.id)
            .group_by(Image.status)
        ).all()
    )
    newest = inspections[-1] if inspections else None
    by_class: dict[str, int] = {}
    hits = 0
    if newest is not None:
        by_class, hits = _latest_calls(session, newest.id)
    return {
        **_plate_row(plate, newest.imaged_at if newest else None),
        "inspection_count": len(inspections),
        "images": {status.value: int(statuses.get(status.value, 0)) for status in ImageStatus},
        "newest_inspection": {
            "id": newest.id,
            "imaged_at": iso(newest.imaged_at),
            "top_classes": by_class,
            "hits": hits,
        }
        if newest
        else None,
    }


def _latest_calls(session: Session, inspection_id: int) -> tuple[dict[str, int], int]:
    """Top classes and hits over each image's latest score (as `latest_scores` picks it:
    the active model's, else the newest), counted in SQL."""
    rank = latest_rank()
    ranked = (
        select(Score.top_class, Score.hit, rank)
        .join(ModelVersion, Score.model_version_id == ModelVersion.id)
        .join(Image, Score.image_id == Image.id)
        .where(Image.inspection_id == inspection_id)
        .subquery()
    )
    rows = session.execute(
        select(ranked.c.top_class, func.count(), func.sum(case((ranked.c.hit, 1), else_=0)))
        .where(ranked.c.rank == 1)
        .group_by(ranked.c.top_class)
        .order_by(ranked.c.top_class)
    ).all()
    return {label: int(n) for label, n, _ in rows}, sum(int(h or 0) for *_, h in rows)


def inspections_page(session: Session, plate: Plate, limit: int, cursor: int) -> Page:
    """The plate's inspections oldest first (a time course), with days since the first."""
    first = session.scalar(
        select(func.min(Inspection.imaged_at)).where(Inspection.plate_id == plate.id)
    )
    counts = (
        select(Image.inspection_id, func.count().label("n"))
        .group_by(Image.inspection_id)
        .subquery()
    )
    rows = session.execute(
        select(Inspection, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.inspection_id == Inspection.id)
        .where(Inspection.plate_id == plate.id)
        .order_by(Inspection.imaged_at, Inspection.id)
        .offset(cursor)
        .limit(limit + 1)
    ).all()
    rows, after = _page(rows, limit, lambda _: cursor + limit)
    return {
        "inspections": [
            {
                "id": inspection.id,
                "barcode": plate.barcode,
                "imaged_at": iso(inspection.imaged_at),
                "days_since_first": round(
                    (inspection.imaged_at - first).total_seconds() / 86400, 2
                ),
                "imager": inspection.imager,
                "external_id": inspection.external_id,
                "image_count": n,
            }
            for inspection, n in rows
        ],
        "next": after,
    }


def inspection_drops_page(
    session: Session, inspection_id: int, limit: int, cursor: int, with_path: bool
) -> Page:
    """The inspection's images in well order (row, column, drop), each with its latest
    score."""
    query = placed_images(inspection_id=inspection_id).offset(cursor).limit(limit + 1)
    images = list(session.scalars(query))
    images, after = _page(images, limit, lambda _: cursor + limit)
    scores = latest_scores(session, (image.id for image in images))
    return {
        "drops": [image_dict(image, scores.get(image.id), with_path) for image in images],
        "next": after,
    }


def images_page(
    session: Session, status: str | None, limit: int, cursor: int, with_path: bool
) -> Page:
    """Images by id (oldest first), optionally of one status."""
    query = select(Image).options(*IMAGE_LOADS).where(Image.id > cursor).order_by(Image.id)
    if status is not None:
        query = query.where(Image.status == status)
    images, after = _page(list(session.scalars(query.limit(limit + 1))), limit, lambda i: i.id)
    scores = latest_scores(session, (image.id for image in images))
    return {
        "images": [image_dict(image, scores.get(image.id), with_path) for image in images],
        "next": after,
    }


def model_dict(version: ModelVersion, full: bool = False) -> dict[str, Any]:
    body = {
        "id": version.id,
        "name": version.name,
        "version": version.version,
        "ref": f"{version.name}:{version.version}",
        "architecture": version.architecture,
        "scheme": version.scheme,
        "labels": version.labels,
        "active": version.active,
        "artifact_sha256": version.artifact_sha256,
        "created_at": iso(version.created_at),
    }
    if full:
        body.update(card=version.card, metrics=version.metrics)
    return body


def models_page(session: Session, limit: int, cursor: int) -> Page:
    """Model versions newest first."""
    query = select(ModelVersion).order_by(ModelVersion.id.desc()).limit(limit + 1)
    if cursor:
        query = query.where(ModelVersion.id < cursor)
    rows, after = _page(list(session.scalars(query)), limit, lambda row: row.id)
    return {"models": [model_dict(row) for row in rows], "next": after}
