"""Feed positions in commit order, so a client polling `?since=<cursor>` sees every row once.

Row ids are handed out when a row is inserted, not when it commits: with several writers,
id 11 can commit before id 10, and a client that already moved its cursor past 11 would
never see 10. A feed position is claimed instead from the feed's counter row as the last
step before commit; the row stays locked until the commit, so the next writer's position
is higher and its commit later. (SQLite has one writer at a time anyway.) Claim early in a
writing transaction, before other locks, so every writer takes its locks in one order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from marco_svc.db.models import FeedCounter, HumanScore, Image, Inspection, Plate, Score
from marco_svc.queries import IMAGE_LOADS, SCORE_MODEL, image_dict

SCORES = "scores"
HUMAN_SCORES = "human_scores"
_ROWS = {SCORES: Score, HUMAN_SCORES: HumanScore}


def claim(session: Session, feed: str, count: int = 1) -> Iterator[int]:
    """Reserve `count` consecutive positions on `feed`, in order. The counter row stays
    locked until the transaction ends; unused positions are harmless gaps."""
    if count == 0:
        return iter(())
    bump = (
        update(FeedCounter)
        .where(FeedCounter.name == feed)
        .values(value=FeedCounter.value + count)
        .returning(FeedCounter.value)
    )
    last = session.execute(bump).scalar()
    if last is None:  # no counter yet (the migration makes them; an emptied table loses it)
        _start(session, feed)
        last = session.execute(bump).scalar_one()
    return iter(range(last - count + 1, last + 1))


def _start(session: Session, feed: str) -> None:
    """Create the counter at the highest position already used."""
    table = _ROWS[feed]
    highest = session.scalar(select(func.coalesce(func.max(table.feed_seq), 0)))
    try:
        with session.begin_nested():
            session.add(FeedCounter(name=feed, value=highest))
    except IntegrityError:
        pass  # another writer created it first


@dataclass(frozen=True)
class FeedFilter:
    """What a feed poll asks for (None: no filter)."""

    model_version_id: int | None = None
    hits_only: bool = False
    barcode: str | None = None
    top_class: str | None = None
    imaged_after: datetime | None = None
    imaged_before: datetime | None = None


def scores_since(
    session: Session, since: int, limit: int, where: FeedFilter, with_path: bool
) -> dict[str, Any]:
    """Scores placed after `since` in feed order, each with its image, and the `next` cursor
    (the last position read, or `since` when nothing is new)."""
    query = (
        select(Score)
        .options(SCORE_MODEL)
        .join(Image, Score.image_id == Image.id)
        .where(Score.feed_seq > since)
        .order_by(Score.feed_seq)
        .limit(limit)
    )
    if where.model_version_id is not None:
        query = query.where(Score.model_version_id == where.model_version_id)
    if where.hits_only:
        query = query.where(Score.hit)
    if where.top_class is not None:
        query = query.where(Score.top_class == where.top_class)
    if where.barcode or where.imaged_after or where.imaged_before:
        query = query.join(Inspection, Image.inspection_id == Inspection.id)
    if where.barcode:
        query = query.join(Plate, Inspection.plate_id == Plate.id).where(
            Plate.barcode == where.barcode
        )
    if where.imaged_after:
        query = query.where(Inspection.imaged_at >= where.imaged_after)
    if where.imaged_before:
        query = query.where(Inspection.imaged_at < where.imaged_before)
    rows = list(session.scalars(query))
    images = {
        image.id: image
        for image in session.scalars(
            select(Image).options(*IMAGE_LOADS).where(Image.id.in_([s.image_id for s in rows]))
        )
    }
    return {
        "items": [
            {**image_dict(images[s.image_id], s, with_path), "position": str(s.feed_seq)}
            for s in rows
        ],
        "next": str(rows[-1].feed_seq if rows else since),
    }
