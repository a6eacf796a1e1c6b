"""A plate as the web page draws it: one cell per drop of one inspection, with its latest
(or one model version's) score as four-way probabilities and its band (Unknown or
confident, `scoring.confidence`), the latest human label, quality flags, the best
P(Crystals) over every inspection (so an earlier hit is not hidden by a later image), and,
when asked, a second version's call to compare with.

A 384-well, 3-drop plate has 1,152 cells, so every query here reads columns, not objects.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from imager_adapters.wells import plate_type
from marco_svc.db.models import Drop, HumanScore, Image, Inspection, ModelVersion, Plate, Score
from marco_svc.labels import to_four
from marco_svc.queries import WELL_ORDER, iso, latest_rank
from marco_svc.scoring.confidence import band


def _drops(session: Session, inspection_id: int) -> list[Any]:
    return session.execute(
        select(
            Image.id,
            Image.status,
            Image.imaging_mode,
            Drop.id.label("drop_id"),
            Drop.well,
            Drop.drop_number,
            Drop.row_index,
            Drop.column_number,
        )
        .join(Drop, Image.drop_id == Drop.id)
        .where(Image.inspection_id == inspection_id)
        .order_by(*WELL_ORDER)
    ).all()


def _scores(session: Session, inspection_id: int, version_id: int | None) -> dict[int, Any]:
    """Per image: that version's score, else the latest (the active model's, else the
    newest, as `queries.latest_scores` picks)."""
    columns = (
        Score.image_id,
        Score.probabilities,
        Score.top_class,
        Score.p_crystal,
        Score.hit,
        Score.quality,
        Score.rule,
    )
    if version_id is not None:
        query = (
            select(*columns)
            .join(Image, Score.image_id == Image.id)
            .where(Image.inspection_id == inspection_id, Score.model_version_id == version_id)
        )
        return {row.image_id: row for row in session.execute(query)}
    rank = latest_rank()
    ranked = (
        select(*columns, rank)
        .join(ModelVersion, Score.model_version_id == ModelVersion.id)
        .join(Image, Score.image_id == Image.id)
        .where(Image.inspection_id == inspection_id)
        .subquery()
    )
    rows = session.execute(select(ranked).where(ranked.c.rank == 1))
    return {row.image_id: row for row in rows}


def _calls(session: Session, inspection_id: int, version_id: int) -> dict[int, tuple[str, bool]]:
    rows = session.execute(
        select(Score.image_id, Score.top_class, Score.hit)
        .join(Image, Score.image_id == Image.id)
        .where(Image.inspection_id == inspection_id, Score.model_version_id == version_id)
    )
    return {image_id: (top, bool(hit)) for image_id, top, hit in rows}


def _latest_humans(session: Session, inspection_id: int) -> dict[int, tuple[str, str]]:
    latest: dict[int, tuple[str, str]] = {}
    rows = session.execute(
        select(HumanScore.image_id, HumanScore.label, HumanScore.scheme)
        .join(Image, HumanScore.image_id == Image.id)
        .where(Image.inspection_id == inspection_id)
        .order_by(HumanScore.feed_seq)
    )
    for image_id, label, scheme in rows:
        latest[image_id] = (label, scheme)
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


def _cell(drop: Any, score: Any, human: Any, best: Any, other: Any) -> dict[str, Any]:
    cell: dict[str, Any] = {
        "image_id": drop.id,
        "well": drop.well,
        "drop": drop.drop_number,
        "row": drop.row_index,
        "column": drop.column_number,
        "status": drop.status,
        "imaging_mode": drop.imaging_mode,
        "four": {},
        "top_class": None,
        "p_crystal": None,
        "hit": False,
        "band": None,
        "flags": [],
        "human": human[0] if human else None,
        "human_scheme": human[1] if human else None,
        "best_p_crystal": round(best[0], 4) if best else None,
        "ever_hit": best[1] if best else False,
        "other": {"top_class": other[0], "hit": other[1]} if other else None,
    }
    if score is not None:
        cell["four"] = {k: round(v, 4) for k, v in to_four(score.probabilities).items()}
        cell["top_class"], cell["hit"] = score.top_class, bool(score.hit)
        cell["p_crystal"] = round(score.p_crystal, 4)
        cell["flags"] = list((score.quality or {}).get("flags", []))
        cell["band"] = band(score.probabilities, (score.rule or {}).get("unknown_below"))
    return cell


def plate_grid(
    session: Session,
    plate: Plate,
    inspection: Inspection,
    version_id: int | None = None,
    compare_id: int | None = None,
) -> dict[str, Any]:
    """The grid of `inspection` (a plate's) and what colours each cell."""
    kind = plate_type(plate.wells, plate.drops)
    scores = _scores(session, inspection.id, version_id)
    others = _calls(session, inspection.id, compare_id) if compare_id is not None else {}
    humans = _latest_humans(session, inspection.id)
    best = _best_over_time(session, plate.id, version_id)
    cells = [
        _cell(
            drop,
            scores.get(drop.id),
            humans.get(drop.id),
            best.get(drop.drop_id),
            others.get(drop.id),
        )
        for drop in _drops(session, inspection.id)
    ]
    return {
        "barcode": plate.barcode,
        "rows": kind.rows,
        "columns": kind.columns,
        "drops": kind.drops,
        "inspection": {"id": inspection.id, "imaged_at": iso(inspection.imaged_at)},
        "cells": cells,
    }
