"""The one ingest path: an ImageRecord (or a Rejection) becomes stored rows, idempotently.

`ingest` reads the file through `file_access` (links out of the allowed folders, special
files and oversized files are refused unread) and upserts plate, inspection, drop and
image in one transaction. An image is its drop slot (inspection, drop, imaging mode)
plus its content: the same file twice gives one Image, identical bytes in another slot
are another Image, new content for a slot is its next version (1..N, unique; writers
that race retry). A bad file or conflicting metadata is stored as a failed Image with
its reason; offering the file again retries it (the reason is updated, or the failed
row becomes the image). When a stored path no longer exists (the file was moved or
renamed), or the image's file stayed on an imager PC and has now arrived here, the image
follows it to the new path. Whatever adapter made the record, its barcode, imager,
imaging mode and inspection id are checked (`imager_adapters.fields`) before anything
is stored: a bad one is a failed Image ("invalid metadata: ..."), and the imaging mode
is stored in its canonical lower-case spelling.

`ingest_remote` takes the same path for an image that stays on another machine (an edge
agent scored it on the imager PC): nothing is read, the agent's facts (sha256, size,
width, height) stand in for the file's, and the image is known by the uri
`edge://<imager>/<path on that PC>` (`remote_uri`). The identity rules are the same.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from imager_adapters.fields import (
    check_barcode,
    check_imager,
    check_imaging_mode,
    check_text,
    escape_controls,
)
from imager_adapters.record import ImageRecord, Rejection
from imager_adapters.wells import LAYOUTS, GeometryError, smallest_layout, split_well, well_name
from marco_svc.db.models import Drop, Image, ImageStatus, Inspection, Plate
from marco_svc.db.session import Database
from marco_svc.file_access import FileFacts, FilePolicy, read_image_file
from marco_svc.image_check import ImageInfo

Outcome = Literal["created", "duplicate", "failed"]
_RETRIES = 12
REMOTE_SCHEME = "edge://"
MAX_REMOTE_PATH = 1024  # the uri (2048 characters) holds the scheme, imager and path


def remote_uri(imager: str, path: str) -> str:
    """How an image kept on an imager PC is known: `edge://<imager>/<its path there>`."""
    return f"{REMOTE_SCHEME}{imager}/{path}"


def is_remote(uri: str) -> bool:
    """Whether a stored image's file is on another machine (the server cannot read it)."""
    return uri.startswith(REMOTE_SCHEME)


def split_remote(uri: str) -> tuple[str, str]:
    """(imager, path on that PC) of a `remote_uri` (an imager name holds no '/')."""
    imager, _, path = uri.removeprefix(REMOTE_SCHEME).partition("/")
    return imager, path


class IngestConflict(ValueError):
    """Metadata that contradicts what is already stored."""


@dataclass(frozen=True)
class IngestResult:
    outcome: Outcome
    image_id: int
    path: Path
    reason: str | None = None
    version: int = 1


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _settle(
    what: str, current: int, inferred: bool, stated: int | None, needed: int, limit: int
) -> tuple[int, bool]:
    """One plate dimension after seeing a record: (value, still inferred) or IngestConflict."""
    if stated is not None:
        if not inferred and current != stated:
            raise IngestConflict(f"plate has {current} {what}, this file says {stated}")
        if inferred and current > stated:
            raise IngestConflict(
                f"this file says the plate has {stated} {what}, but {current} are already stored"
            )
        if needed > stated:
            raise IngestConflict(f"{what}: needs {needed}, the plate has {stated}")
        return stated, False
    if needed <= current:
        return current, inferred
    if inferred and needed <= limit:
        return needed, True
    raise IngestConflict(f"{what}: needs {needed}, the plate has {current}")


def _plate(session: Session, record: ImageRecord) -> Plate:
    """Get or create the plate and make its geometry agree with this record."""
    wells_needed = smallest_layout(record.well)
    if record.plate_wells is not None and record.plate_wells not in LAYOUTS:
        raise GeometryError(f"unsupported plate of {record.plate_wells} wells")
    plate = session.scalar(select(Plate).where(Plate.barcode == record.barcode))
    if plate is None:
        wells = record.plate_wells or wells_needed
        plate = Plate(
            barcode=record.barcode,
            wells=wells,
            drops=record.plate_drops or record.drop,
            wells_inferred=record.plate_wells is None,
            drops_inferred=record.plate_drops is None,
        )
        session.add(plate)
    plate.wells, plate.wells_inferred = _settle(
        "wells", plate.wells, plate.wells_inferred, record.plate_wells, wells_needed, 384
    )
    most_drops = LAYOUTS[plate.wells][2]
    plate.drops, plate.drops_inferred = _settle(
        "drops per well",
        plate.drops,
        plate.drops_inferred,
        record.plate_drops,
        record.drop,
        most_drops,
    )
    if plate.drops > most_drops or record.drop < 1:
        raise GeometryError(
            f"a {plate.wells}-well plate has 1 to {most_drops} drops per well, "
            f"not drop {record.drop} of {plate.drops}"
        )
    session.flush()
    return plate


def _inspection(session: Session, plate: Plate, record: ImageRecord) -> Inspection:
    imaged_at = _naive_utc(record.inspected_at)
    inspection = session.scalar(
        select(Inspection).where(
            Inspection.plate_id == plate.id,
            Inspection.imaged_at == imaged_at,
            Inspection.imager == record.imager,
        )
    )
    if inspection is None:
        inspection = Inspection(
            plate_id=plate.id,
            imaged_at=imaged_at,
            imager=record.imager,
            external_id=record.inspection_id,
        )
        session.add(inspection)
        session.flush()
    elif record.inspection_id and inspection.external_id != record.inspection_id:
        if inspection.external_id:
            raise IngestConflict(
                f"inspection of {plate.barcode} at {imaged_at} has id "
                f"{inspection.external_id!r}, this file says {record.inspection_id!r}"
            )
        inspection.external_id = record.inspection_id
    return inspection


def _drop(session: Session, plate: Plate, well: str, number: int) -> Drop:
    """Get or create the drop, locked (PostgreSQL) so its versions are counted by one writer."""
    drop = session.scalar(
        select(Drop)
        .where(Drop.plate_id == plate.id, Drop.well == well, Drop.drop_number == number)
        .with_for_update()
    )
    if drop is None:
        row, column = split_well(well)
        drop = Drop(
            plate_id=plate.id, well=well, drop_number=number, row_index=row, column_number=column
        )
        session.add(drop)
        session.flush()
    return drop


def _unplaced_failure(session: Session, uri: str, sha: str) -> Image | None:
    """The failed row without a slot for this file: this content first, else any earlier."""
    query = select(Image).where(
        Image.uri == uri, Image.drop_id.is_(None), Image.status == ImageStatus.FAILED
    )
    return session.scalar(query.order_by((Image.sha256 == sha).desc(), Image.id.desc()).limit(1))


def _fill(image: Image, facts: FileFacts, adapter: str, uri: str) -> Outcome:
    """Make `image` say what reading the file found now; its outcome."""
    image.uri = uri
    image.sha256 = facts.sha256
    image.size_bytes = facts.size
    image.adapter = adapter
    image.width = facts.info.width if facts.info else None
    image.height = facts.info.height if facts.info else None
    image.status = ImageStatus.FAILED if facts.problem else ImageStatus.NEW
    image.error = facts.problem
    return "failed" if facts.problem else "created"


def _store_record(
    session: Session, record: ImageRecord, facts: FileFacts, uri: str
) -> IngestResult:
    plate = _plate(session, record)
    canonical_well = well_name(*split_well(record.well))
    inspection = _inspection(session, plate, record)
    drop = _drop(session, plate, canonical_well, record.drop)
    slot = (
        Image.inspection_id == inspection.id,
        Image.drop_id == drop.id,
        Image.imaging_mode == record.imaging_mode,
    )
    same = session.scalar(select(Image).where(*slot, Image.sha256 == facts.sha256).limit(1))
    if same is not None and facts.sha256:
        if same.uri != uri and (is_remote(same.uri) or not Path(same.uri).exists()):
            same.uri = uri  # the file was moved, renamed, or came from the imager PC
        if same.status != ImageStatus.FAILED:
            return IngestResult("duplicate", same.id, facts.path, same.error, same.version)
        outcome = _fill(same, facts, record.adapter, uri)  # a failure offered again: retried
        return IngestResult(outcome, same.id, facts.path, facts.problem, same.version)
    version = (session.scalar(select(func.max(Image.version)).where(*slot)) or 0) + 1
    image = _unplaced_failure(session, uri, facts.sha256) or Image()
    image.inspection_id, image.drop_id = inspection.id, drop.id
    image.imaging_mode, image.version = record.imaging_mode, version
    outcome = _fill(image, facts, record.adapter, uri)
    session.add(image)
    session.flush()
    return IngestResult(outcome, image.id, facts.path, facts.problem, version)


def _checked(record: ImageRecord) -> ImageRecord:
    """The record with its text checked and its mode canonical; ValueError names the field."""
    checks = {
        "barcode": check_barcode,
        "imager": check_imager,
        "imaging_mode": check_imaging_mode,
        "inspection_id": lambda value: None if value is None else check_text(value),
    }
    changes: dict[str, str | None] = {}
    for name, check in checks.items():
        try:
            changes[name] = check(getattr(record, name))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return replace(record, **changes)


def _store_failure(
    session: Session, facts: FileFacts, reason: str, adapter: str, uri: str
) -> IngestResult:
    """Record why a file could not be placed; a stored image of the same file stays as it is."""
    reason = escape_controls(reason)  # an adapter's reason may quote what it could not read
    if facts.sha256:
        stored = session.scalar(
            select(Image)
            .where(
                Image.uri == uri, Image.sha256 == facts.sha256, Image.status != ImageStatus.FAILED
            )
            .limit(1)
        )
        if stored is not None:
            return IngestResult("duplicate", stored.id, facts.path, None, stored.version)
    image = _unplaced_failure(session, uri, facts.sha256) or Image(version=1)
    _fill(image, replace(facts, problem=reason), adapter, uri)
    session.add(image)
    session.flush()
    return IngestResult("failed", image.id, facts.path, reason)


def _store(db: Database, item: ImageRecord | Rejection, facts: FileFacts, uri: str) -> IngestResult:
    if facts.refused or isinstance(item, Rejection):
        # A refused file was not read: no slot is given to what may not be an image at all.
        reason = facts.problem if facts.refused else item.reason
        with db.session() as session:
            return _store_failure(session, facts, reason or "refused", item.adapter, uri)
    try:
        record = _checked(replace(item, path=facts.path))
    except ValueError as exc:
        with db.session() as session:
            return _store_failure(session, facts, f"invalid metadata: {exc}", item.adapter, uri)
    try:
        with db.session() as session:
            return _store_record(session, record, facts, uri)
    except (IngestConflict, GeometryError) as exc:
        reason = f"conflicting metadata: {exc}"
        with db.session() as session:
            return _store_failure(session, facts, reason, item.adapter, uri)


def _raced(exc: Exception) -> bool:
    """Another writer got there first: a unique key, or SQLite's single writer slot."""
    if isinstance(exc, IntegrityError):
        return True
    return "database is locked" in str(exc) or "deadlock detected" in str(exc)


def ingest(
    db: Database, item: ImageRecord | Rejection, policy: FilePolicy | None = None
) -> IngestResult:
    """Store one image (or its failure) exactly once; safe to call again and concurrently.

    Files are known by their absolute, resolved path, so relative and absolute
    spellings of one file are the same image; a refused link is known by its own path.
    """
    facts = read_image_file(Path(item.path), policy or FilePolicy())
    return _stored(db, item, facts, str(facts.path))


def ingest_remote(
    db: Database, record: ImageRecord, *, sha256: str, size: int, width: int, height: int
) -> IngestResult:
    """Store one image kept on the imager PC `record.imager` at `record.path` (an edge agent
    read and scored it there) exactly as `ingest` stores a file, from the facts the agent
    gives instead of reading it: known as `remote_uri(imager, path)`, status new; the same
    slot and content is the same image. The imager name and the path make the uri, so they
    are checked first (ValueError naming the field, nothing stored); everything else is
    checked as for any record (a failed image with its reason)."""
    try:
        imager = check_imager(record.imager)
    except ValueError as exc:
        raise ValueError(f"imager: {exc}") from None
    try:
        path = check_text(str(record.path), MAX_REMOTE_PATH)
    except ValueError as exc:
        raise ValueError(f"path: {exc}") from None
    facts = FileFacts(Path(path), sha256, size, ImageInfo("", width, height))
    return _stored(db, record, facts, remote_uri(imager, path))


def _stored(
    db: Database, item: ImageRecord | Rejection, facts: FileFacts, uri: str
) -> IngestResult:
    """`_store`, again when another writer raced it."""
    for attempt in range(_RETRIES):
        try:
            return _store(db, item, facts, uri)
        except (IntegrityError, OperationalError) as exc:
            # Another writer stored the same rows, or took the version, first: look again.
            if attempt == _RETRIES - 1 or not _raced(exc):
                raise
            time.sleep(random.uniform(0, 0.02 * (attempt + 1)))
    raise AssertionError("unreachable")
