"""People's labels for images (HumanScore): set one's own label, correct it, read them.

One home for the REST API, the web page and imports. A person's PUT sets their current
label for an image (their latest row changes; another person's label is theirs). Each
change takes a new place in the human-scores feed (marco_svc.feed), claimed first, which
also serialises writers so two PUTs of one person never make two rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from marco_svc import feed
from marco_svc.db.models import HumanScore, Image, ImageStatus, utcnow
from marco_svc.db.session import Database
from marco_svc.labels import HUMAN_SCALES
from marco_svc.queries import human_score_dict


class LabelError(ValueError):
    """A label or scale that does not exist."""


class NotYours(PermissionError):
    """A label belongs to someone else."""


@dataclass(frozen=True)
class Written:
    body: dict[str, Any]
    created: bool
    changed: bool


def canonical(label: str, scheme: str) -> str:
    """The label as its scale spells it (case-insensitive match), else LabelError."""
    if scheme not in HUMAN_SCALES:
        raise LabelError(f"unknown scale {scheme!r} (known: {', '.join(HUMAN_SCALES)})")
    for known in HUMAN_SCALES[scheme]:
        if known.casefold() == label.strip().casefold():
            return known
    raise LabelError(
        f"{label!r} is not a label of {scheme} (labels: {', '.join(HUMAN_SCALES[scheme])})"
    )


def put(db: Database, image_id: int, label: str, scheme: str, who: str, source: str) -> Written:
    """Set `who`'s label for the image; the same label again changes nothing."""
    label = canonical(label, scheme)
    with db.session() as session:
        position = feed.claim(session, feed.HUMAN_SCORES)
        image = session.get(Image, image_id)
        if image is None:
            raise LookupError(f"no image {image_id}")
        if image.status == ImageStatus.FAILED:
            raise LabelError(f"image {image_id} failed its checks ({image.error}); not labelled")
        mine = session.scalar(
            select(HumanScore)
            .where(HumanScore.image_id == image_id, HumanScore.who == who)
            .order_by(HumanScore.id.desc())
            .limit(1)
        )
        if mine is not None and (mine.label, mine.scheme) == (label, scheme):
            return Written(human_score_dict(mine), created=False, changed=False)
        if mine is None:
            mine = HumanScore(image_id=image_id, who=who, source=source, created_at=utcnow())
            session.add(mine)
            created = True
        else:
            created = False
        mine.label, mine.scheme, mine.source = label, scheme, source
        mine.feed_seq = next(position)
        mine.updated_at = utcnow()
        session.flush()
        return Written(human_score_dict(mine), created=created, changed=True)


def patch(
    db: Database, human_id: int, who: str, may_edit_others: bool, **changes: str | None
) -> Written:
    """Change a label (`label`, `scheme`); only its author may, or an admin."""
    with db.session() as session:
        position = feed.claim(session, feed.HUMAN_SCORES)
        row = session.get(HumanScore, human_id)
        if row is None:
            raise LookupError(f"no human score {human_id}")
        if row.who != who and not may_edit_others:
            raise NotYours(f"human score {human_id} is {row.who!r}'s, not yours")
        scheme = changes.get("scheme") or row.scheme
        label = canonical(changes.get("label") or row.label, scheme)
        if (label, scheme) == (row.label, row.scheme):
            return Written(human_score_dict(row), created=False, changed=False)
        row.label, row.scheme, row.updated_at = label, scheme, utcnow()
        row.feed_seq = next(position)
        session.flush()
        return Written(human_score_dict(row), created=False, changed=True)


def of_image(session: Session, image_id: int) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(HumanScore).where(HumanScore.image_id == image_id).order_by(HumanScore.id)
    )
    return [human_score_dict(row) for row in rows]


def since(session: Session, cursor: int, limit: int) -> dict[str, Any]:
    """Labels set or changed after `cursor`, in commit order, and the next cursor."""
    rows = list(
        session.scalars(
            select(HumanScore)
            .where(HumanScore.feed_seq > cursor)
            .order_by(HumanScore.feed_seq)
            .limit(limit)
        )
    )
    return {
        "human_scores": [{**human_score_dict(row), "position": str(row.feed_seq)} for row in rows],
        "next": str(rows[-1].feed_seq if rows else cursor),
    }
