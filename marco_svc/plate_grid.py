"""A plate as the web page draws it: one cell per drop of one inspection, with its latest
(or one model version's) score as four-way probabilities, the latest human label, quality
flags, the best P(Crystals) over every inspection (so an earlier hit is not hidden by a
later image), and, when asked, a second version's call to compare with."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, joinedload

from imager_adapters.wells import plate_type
from marco_svc.db.models import Drop, HumanScore, Image, Inspection, Plate, Score
from marco_svc.labels import to_four
from marco_svc.queries import iso, latest_scores, placed_images


@dataclass
class Cell:
    image_id: int
    well: str
    drop: int
    row: int
    column: int
    status: str
    imaging_mode: str
    four: dict[str, float] = field(default_factory=dict)
    top_class: str | None = None
    p_crystal: float | None = None
    hit: bool = False
    flags: list[str] = field(default_factory=list)
    human: str | None = None
    human_scheme: str | None = None
    best_p_crystal: float | None = None
    ever_hit: bool = False
    other: dict[str, Any] | None = None  # the compared version's call


def _versions_scores(session: Session, ids: list[int], version_id: int) -> dict[int, Score]:
    rows = session.scalars(
        select(Score)
        .options(joinedload(Score.model_version))
        .where(Score.image_id.in_(ids), Score.model_version_id == version_id)
    )
    return {score.image_id: score for score in rows}


def _latest_humans(session: Session, ids: list[int]) -> dict[int, HumanScore]:
    latest: dict[int, HumanScore] = {}
    for row in session.scalars(
        select(HumanScore).where(HumanScore.image_id.in_(ids)).order_by(HumanScore.feed_seq)
    ):
        latest[row.image_id] = row
    return latest


def _best_over_time(
    session: Session, plate_id: int, version_id: int | None
) -> dict[int, tuple[float, bool]]:
    """Per drop: the highest P(Crystals) and whether any image was a hit, every inspection."""
    query = (
        select(Image.drop_id, func.max(Score.p_crystal), func.max(case((Score.hit, 1), else_=0)))
        .join(Score, Score.image_id == Image.id)
        .join(Drop, Image.drop_id == Drop.id)
        .where(Drop.plate_id == plate_id)
        .group_by(Image.drop_id)
    )
    if version_id is not None:
        query = query.where(Score.model_version_id == version_id)
    return {drop: (float(p), bool(hit)) for drop, p, hit in session.execute(query)}


def plate_grid(
    session: Session,
    plate: Plate,
    inspection: Inspection,
    version_id: int | None = None,
    compare_id: int | None = None,
) -> dict[str, Any]:
    """The grid of `inspection` (a plate's) and what colours each cell."""
    kind = plate_type(plate.wells, plate.drops)
    images = list(session.scalars(placed_images(inspection_id=inspection.id)))
    ids = [image.id for image in images]
    scores = (
        latest_scores(session, ids)
        if version_id is None
        else _versions_scores(session, ids, version_id)
    )
    others = _versions_scores(session, ids, compare_id) if compare_id is not None else {}
    humans = _latest_humans(session, ids)
    best = _best_over_time(session, plate.id, version_id)
    cells = []
    for image in images:
        drop = image.drop
        cell = Cell(
            image_id=image.id,
            well=drop.well,
            drop=drop.drop_number,
            row=drop.row_index,
            column=drop.column_number,
            status=image.status,
            imaging_mode=image.imaging_mode,
        )
        score = scores.get(image.id)
        if score is not None:
            cell.four = {k: round(v, 4) for k, v in to_four(score.probabilities).items()}
            cell.top_class, cell.hit = score.top_class, bool(score.hit)
            cell.p_crystal = round(score.p_crystal, 4)
            cell.flags = list((score.quality or {}).get("flags", []))
        if (human := humans.get(image.id)) is not None:
            cell.human, cell.human_scheme = human.label, human.scheme
        if drop.id in best:
            cell.best_p_crystal, cell.ever_hit = round(best[drop.id][0], 4), best[drop.id][1]
        if (other := others.get(image.id)) is not None:
            cell.other = {"top_class": other.top_class, "hit": bool(other.hit)}
        cells.append(asdict(cell))
    return {
        "barcode": plate.barcode,
        "rows": kind.rows,
        "columns": kind.columns,
        "drops": kind.drops,
        "inspection": {"id": inspection.id, "imaged_at": iso(inspection.imaged_at)},
        "cells": cells,
    }
