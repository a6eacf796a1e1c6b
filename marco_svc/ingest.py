"""The one ingest path: an ImageRecord (or a Rejection) becomes stored rows, idempotently.

`ingest` upserts plate, inspection, drop and image in one transaction. The same file
twice gives one Image; the same path with new content is a new version of that drop's
image; a bad file or conflicting metadata is stored as a failed Image with its reason.
A file whose content is already stored for the same drop slot is a duplicate; when the
stored path no longer exists (the file was moved or renamed) the image follows it to
the new path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imager_adapters.record import ImageRecord, Rejection
from imager_adapters.wells import LAYOUTS, GeometryError, smallest_layout, split_well, well_name
from marco_svc.db.models import Drop, Image, Inspection, Plate
from marco_svc.db.session import Database
from marco_svc.image_check import BadImage, ImageInfo, inspect_image_bytes

Outcome = Literal["created", "duplicate", "failed"]
DEFAULT_MAX_PIXELS = 60_000_000
_RETRIES = 3


class IngestConflict(ValueError):
    """Metadata that contradicts what is already stored."""


@dataclass(frozen=True)
class IngestResult:
    outcome: Outcome
    image_id: int
    path: Path
    reason: str | None = None
    version: int = 1


@dataclass(frozen=True)
class _FileFacts:
    sha256: str
    size: int
    info: ImageInfo | None
    problem: str | None


def _read(path: Path, max_pixels: int) -> _FileFacts:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return _FileFacts("", 0, None, f"unreadable file: {exc.strerror or exc}")
    sha = hashlib.sha256(data).hexdigest()
    try:
        return _FileFacts(sha, len(data), inspect_image_bytes(data, max_pixels), None)
    except BadImage as exc:
        return _FileFacts(sha, len(data), None, str(exc))


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
    drop = session.scalar(
        select(Drop).where(Drop.plate_id == plate.id, Drop.well == well, Drop.drop_number == number)
    )
    if drop is None:
        row, column = split_well(well)
        drop = Drop(
            plate_id=plate.id, well=well, drop_number=number, row_index=row, column_number=column
        )
        session.add(drop)
        session.flush()
    return drop


def _existing(session: Session, uri: str, sha: str) -> Image | None:
    return session.scalar(select(Image).where(Image.uri == uri, Image.sha256 == sha))


def _store_record(session: Session, record: ImageRecord, facts: _FileFacts) -> IngestResult:
    uri = str(record.path)
    found = _existing(session, uri, facts.sha256)
    if found is not None:
        return IngestResult("duplicate", found.id, record.path, found.error, found.version)
    plate = _plate(session, record)
    canonical_well = well_name(*split_well(record.well))
    inspection = _inspection(session, plate, record)
    drop = _drop(session, plate, canonical_well, record.drop)
    slot = (
        Image.inspection_id == inspection.id,
        Image.drop_id == drop.id,
        Image.imaging_mode == record.imaging_mode,
    )
    same_content = session.scalar(select(Image).where(*slot, Image.sha256 == facts.sha256))
    if same_content is not None and facts.sha256:
        if same_content.uri != uri and not Path(same_content.uri).exists():
            same_content.uri = uri  # the file was moved or renamed: follow it
        return IngestResult(
            "duplicate", same_content.id, record.path, same_content.error, same_content.version
        )
    version = (session.scalar(select(func.max(Image.version)).where(*slot)) or 0) + 1
    image = Image(
        inspection_id=inspection.id,
        drop_id=drop.id,
        uri=uri,
        sha256=facts.sha256,
        size_bytes=facts.size,
        imaging_mode=record.imaging_mode,
        version=version,
        adapter=record.adapter,
        width=facts.info.width if facts.info else None,
        height=facts.info.height if facts.info else None,
        status="failed" if facts.problem else "new",
        error=facts.problem,
    )
    session.add(image)
    session.flush()
    outcome: Outcome = "failed" if facts.problem else "created"
    return IngestResult(outcome, image.id, record.path, facts.problem, version)


def _store_failure(
    session: Session, path: Path, facts: _FileFacts, reason: str, adapter: str
) -> IngestResult:
    found = _existing(session, str(path), facts.sha256)
    if found is not None:
        return IngestResult("duplicate", found.id, path, found.error, found.version)
    image = Image(
        uri=str(path),
        sha256=facts.sha256,
        size_bytes=facts.size,
        adapter=adapter,
        width=facts.info.width if facts.info else None,
        height=facts.info.height if facts.info else None,
        status="failed",
        error=reason,
    )
    session.add(image)
    session.flush()
    return IngestResult("failed", image.id, path, reason)


def ingest(
    db: Database, item: ImageRecord | Rejection, max_pixels: int = DEFAULT_MAX_PIXELS
) -> IngestResult:
    """Store one image (or its failure) exactly once; safe to call again and concurrently.

    Files are known by their absolute, resolved path, so relative and absolute
    spellings of one file are the same image.
    """
    path = Path(item.path).resolve()
    if isinstance(item, ImageRecord):
        item = replace(item, path=path)
    facts = _read(path, max_pixels)
    for attempt in range(_RETRIES):
        try:
            if isinstance(item, Rejection):
                with db.session() as session:
                    return _store_failure(session, path, facts, item.reason, item.adapter)
            try:
                with db.session() as session:
                    return _store_record(session, item, facts)
            except (IngestConflict, GeometryError) as exc:
                reason = f"conflicting metadata: {exc}"
                with db.session() as session:
                    return _store_failure(session, path, facts, reason, item.adapter)
        except IntegrityError:
            # Another writer stored the same rows first; looking again finds them.
            if attempt == _RETRIES - 1:
                raise
    raise AssertionError("unreachable")
