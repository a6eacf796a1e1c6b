"""Edge images the server asks back: the file of an image an edge agent scored stays on
its imager PC (`edge://IMAGER/PATH`) until someone asks for it, then the agent sends it.

- `register`: an edge result stored an image; remember where its file is on the imager
  PC (kept after the file comes) and which agent holds it (the scope of the token that
  sent the result).
- `ask`: a reader wants the file (its bytes, thumbnail, heatmap or drop page) of an image
  the server does not have. The image is marked wanted and the caller answers "requested
  from the imager PC" (HTTP 202, retry after `RETRY_AFTER` s), or the agent has already
  said it cannot send it (HTTP 410 with its reason).
- `wanted`: what one agent is asked for, at most `limit` at a time; those offered least
  recently come first, so a file the agent cannot send just now never holds others back.
- `receive`: the agent sent the bytes. They must have the sha256 the agent reported with
  its result (else `FileMismatch`, nothing kept) and be an image; they are kept as an
  upload's file is (`<data_dir>/uploads/`, by content) and go through `ingest.ingest`
  like every file: its identity rule (same drop slot, same content) finds this very image
  and points it at the file, so no second image and no second edge score is made. The
  image is then announced on the scoring queue: the Score from the edge stays, and when
  the model that scores now on the server is another version than the agent ran, the
  server scores the image too (a Score of the active model, which the page shows).
- `give_up`: the agent cannot send it (the file was deleted, moved or changed on the
  imager PC): the reason is kept, the server stops asking, and readers get the reason.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imager_adapters.record import ImageRecord
from marco_svc.db.models import EdgeImage, Image, utcnow
from marco_svc.db.session import Database
from marco_svc.file_store import store_content
from marco_svc.image_check import BadImage, inspect_image_bytes
from marco_svc.ingest import REMOTE_SCHEME, ingest, is_remote, split_remote
from marco_svc.ingest_files import file_policy
from marco_svc.runtime import Runtime

RETRY_AFTER = 30  # seconds: about one poll of the agent (marco_svc.edge.pull)
MAX_REASON = 1024
NO_AGENT = "its file stays on the imager PC, and no edge agent is known to hold it"


class NotEdgeImage(LookupError):
    """No such image, or its file never was on an imager PC."""


class NotYours(PermissionError):
    """Another agent holds this image's file."""


class FileMismatch(ValueError):
    """The bytes sent are not the image's (another sha256)."""


class NotAnImage(ValueError):
    """The bytes sent have the image's sha256 but fail the server's image check."""


@dataclass(frozen=True)
class Kept:
    """An image whose file is on an imager PC: `reason` None while it is requested,
    else why it cannot come."""

    image_id: int
    reason: str | None = None
    retry_after: int = RETRY_AFTER


@dataclass(frozen=True)
class WantedFile:
    """One file an agent is asked to send: the image, its path there and its sha256."""

    image_id: int
    path: str
    sha256: str
    size_bytes: int | None


def register(db: Database, image_id: int, scope: str) -> None:
    """The agent of token scope `scope` holds the file of `image_id`, if that file is on an
    imager PC (the first sender is remembered)."""
    try:
        with db.session() as session:
            image = session.get(Image, image_id)
            known = session.get(EdgeImage, image_id) is not None
            if image is not None and is_remote(image.uri) and not known:
                session.add(EdgeImage(image_id=image_id, remote_uri=image.uri, scope=scope))
    except IntegrityError:  # registered meanwhile by a concurrent result
        pass


def ask(db: Database, image_id: int) -> Kept | None:
    """Someone wants the file of `image_id`: None when the server has it (or there is no
    such image), else what to answer (requested, or why it cannot come)."""
    with db.session() as session:
        image = session.get(Image, image_id)
        if image is None or not is_remote(image.uri):
            return None
        row = session.get(EdgeImage, image_id)
        if row is None:
            return Kept(image_id, NO_AGENT)
        if row.unavailable:
            return Kept(image_id, row.unavailable)
        if row.wanted_at is None:
            row.wanted_at = utcnow()
        return Kept(image_id)


def wanted(db: Database, scope: str, limit: int) -> list[WantedFile]:
    """Up to `limit` files the agent of `scope` is asked for, least recently offered first
    (each offered now)."""
    query = (
        select(EdgeImage, Image.uri, Image.sha256, Image.size_bytes)
        .join(Image, EdgeImage.image_id == Image.id)
        .where(
            EdgeImage.scope == scope,
            EdgeImage.wanted_at.is_not(None),
            EdgeImage.unavailable.is_(None),
            Image.uri.startswith(REMOTE_SCHEME, autoescape=True),
        )
        .order_by(EdgeImage.offered_at.asc().nulls_first(), EdgeImage.wanted_at, Image.id)
        .limit(limit)
    )
    with db.session() as session:
        rows = session.execute(query).all()
        now = utcnow()
        for row, *_ in rows:
            row.offered_at = now
    return [
        WantedFile(row.image_id, split_remote(uri)[1], sha256, size)
        for row, uri, sha256, size in rows
    ]


def _edge_image(session: Session, image_id: int) -> tuple[Image, EdgeImage]:
    image = session.get(Image, image_id)
    row = session.get(EdgeImage, image_id)
    if image is None or row is None:
        raise NotEdgeImage(f"no edge image {image_id}")
    return image, row


def give_up(db: Database, image_id: int, scope: str, reason: str, admin: bool = False) -> str:
    """The agent cannot send the file: keep `reason` and stop asking. Returns "unavailable",
    or "stored" when the file is here already (nothing changes)."""
    with db.session() as session:
        image, row = _edge_image(session, image_id)
        if not is_remote(image.uri):
            return "stored"
        if row.scope != scope and not admin:
            raise NotYours(f"another agent holds the file of image {image_id}")
        row.unavailable = reason[:MAX_REASON]
        return "unavailable"


@dataclass(frozen=True)
class Received:
    image_id: int
    outcome: Literal["stored", "duplicate"]  # duplicate: the server had the file already


def _record(image: Image, path: Path) -> ImageRecord:
    """The image's own drop slot, naming the file now on the server."""
    inspection, drop = image.inspection, image.drop
    if inspection is None or drop is None:
        raise NotEdgeImage(f"image {image.id} has no drop slot")
    return ImageRecord(
        path=path,
        barcode=drop.plate.barcode,
        well=drop.well,
        drop=drop.drop_number,
        inspected_at=inspection.imaged_at,
        imager=inspection.imager,
        imaging_mode=image.imaging_mode,
        inspection_id=inspection.external_id,
        adapter=image.adapter,
    )


def receive(runtime: Runtime, image_id: int, data: bytes) -> Received:
    """Keep the file an agent sent for `image_id` and point the image at it (see the
    module docs). NotEdgeImage, FileMismatch or NotAnImage when it cannot be taken."""
    db, settings = runtime.db, runtime.settings
    digest = hashlib.sha256(data).hexdigest()
    with db.session() as session:
        image, _ = _edge_image(session, image_id)
        if digest != image.sha256:
            raise FileMismatch(
                f"the bytes sent have sha256 {digest}; image {image_id} has {image.sha256}"
            )
        if not is_remote(image.uri):
            return Received(image_id, "duplicate")
        name = split_remote(image.uri)[1].replace("\\", "/")
        try:
            inspect_image_bytes(data, settings.max_image_pixels)
        except BadImage as exc:
            raise NotAnImage(str(exc)) from None
        path = store_content(settings.resolved_data_dir / "uploads", digest, name, data)
        record = _record(image, path)
    result = ingest(db, record, file_policy(settings))
    with db.session() as session:
        image, row = _edge_image(session, image_id)
        if result.image_id != image_id or is_remote(image.uri):
            raise RuntimeError(  # the identity rule did not find the image: a bug
                f"image {image_id}: ingest answered {result.outcome} image {result.image_id}"
            )
        row.received_at = utcnow()
    runtime.scoring_queue.put([image_id])
    return Received(image_id, "stored")
