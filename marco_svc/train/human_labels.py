"""Human scores (corrections made in the web page) as a CSV training manifest.

One row per image with at least one human score: its latest label (by time, then id),
in the columns `datasets.read_manifest` reads (`path,label,group`, then details). The
group is `<barcode>/<well>/<drop>`, so group-aware splits keep every image of a drop
(all inspections, all imaging modes) on one side. Ten-way labels can be exported as
four-way; four-way ones cannot become ten-way and are skipped. Images that failed
ingest, whose file is gone, or whose file now holds other content (an imager wrote a
new version to the same path) are skipped too, and every skip is counted by reason.
"""

from __future__ import annotations

import csv
import hashlib
import io
import stat
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from marco_svc.db.models import Drop, HumanScore, Image, ImageStatus, Inspection, Plate
from marco_svc.db.session import Database
from marco_svc.file_store import atomic_write
from marco_svc.labels import (
    ISPYB10,
    ISPYB10_LABELS,
    ISPYB10_TO_FOUR,
    MARCO4,
    MERCK10,
    SCHEMES,
    TEN_TO_FOUR,
    labels_of,
)
from marco_svc.train.datasets import label_candidates

COLUMNS: tuple[str, ...] = (
    "path",
    "label",
    "group",
    "barcode",
    "well",
    "drop",
    "imaging_mode",
    "imaged_at",
    "image_id",
    "original_label",
    "original_scheme",
    "who",
    "source",
    "scored_at",
)

SKIP_REASONS: dict[str, str] = {
    "failed_image": "image failed ingest",
    "unknown_label": "label not in its scheme",
    "four_way_only": "four-way label has no ten-way equivalent",
    "missing_file": "file no longer exists",
    "changed_file": "file content changed since it was scored",
}

EXAMPLES_PER_REASON = 10
_CHUNK = 1 << 20


class ExportError(ValueError):
    """An export that cannot be made, and why (one line)."""


@dataclass
class ExportSummary:
    """What an export wrote and what it skipped, by reason (with a few example paths)."""

    out: str
    scheme: str
    written: int
    considered: int
    counts: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_examples: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """The one-line report the CLI prints."""
        counts = ", ".join(f"{label} {n}" for label, n in self.counts.items() if n)
        return (
            f"wrote {self.written} {self.scheme} label(s) to {self.out} ({counts}); "
            f"{describe_skips(self.skipped)}"
        )


def describe_skips(skipped: dict[str, int]) -> str:
    if not skipped:
        return "skipped none"
    reasons = ", ".join(f"{n} {SKIP_REASONS.get(r, r)}" for r, n in skipped.items())
    return f"skipped {sum(skipped.values())}: {reasons}"


def check_scheme(scheme: str | None) -> None:
    """An ExportError unless the scheme is None or a known one."""
    if scheme is not None and scheme not in SCHEMES:
        raise ExportError(f"unknown label scheme {scheme!r} (known: {', '.join(SCHEMES)})")


def parse_since(text: str) -> datetime:
    """An ISO date or time as naive UTC (naive input is taken as UTC already)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ExportError(
            f"bad time {text!r}: expected ISO 8601 such as 2024-05-01 or 2024-05-01T09:30Z"
        ) from None
    return _naive_utc(moment)


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else ""


def _latest(session: Session, barcodes: Sequence[str], since: datetime | None) -> list[Row[Any]]:
    """Per image, its latest human score with the image's file and place on the plate."""
    query = (
        select(
            HumanScore.image_id,
            HumanScore.label,
            HumanScore.scheme,
            HumanScore.who,
            HumanScore.source,
            HumanScore.created_at,
            Image.uri,
            Image.sha256,
            Image.size_bytes,
            Image.status,
            Image.imaging_mode,
            Inspection.imaged_at,
            Plate.barcode,
            Drop.well,
            Drop.drop_number,
            Drop.row_index,
            Drop.column_number,
        )
        .join(Image, HumanScore.image_id == Image.id)
        .outerjoin(Inspection, Image.inspection_id == Inspection.id)
        .outerjoin(Plate, Inspection.plate_id == Plate.id)
        .outerjoin(Drop, Image.drop_id == Drop.id)
        .order_by(HumanScore.image_id, HumanScore.created_at, HumanScore.id)
    )
    if barcodes:
        query = query.where(Plate.barcode.in_(list(barcodes)))
    if since is not None:
        # The latest score overall is the latest one since `since` whenever one exists.
        query = query.where(HumanScore.created_at >= since)
    latest: dict[int, Row[Any]] = {}
    for row in session.execute(query):  # ordered so the latest comes last
        latest[row.image_id] = row
    return sorted(
        latest.values(),
        key=lambda r: (
            r.barcode or "",
            r.row_index or 0,
            r.column_number or 0,
            r.drop_number or 0,
            r.imaged_at or datetime.min,
            r.image_id,
        ),
    )


def _convert(label: str, stored: str, target: str | None) -> tuple[str, str] | str:
    """(label, scheme) in the target scheme, or the reason it cannot be exported. ISPyB's
    manual scale is no model's: its labels go out as four-way ones."""
    if stored == ISPYB10:
        if label not in ISPYB10_LABELS:
            return "unknown_label"
        return (ISPYB10_TO_FOUR[label], MARCO4) if target in (None, MARCO4) else "four_way_only"
    canonical = label_candidates(label).get(stored)
    if canonical is None:
        return "unknown_label"
    if target is None or target == stored:
        return canonical, stored
    if target == MARCO4 and stored == MERCK10:
        return TEN_TO_FOUR[canonical], MARCO4
    return "four_way_only"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _file_problem(path: Path, sha256: str, size: int | None) -> str | None:
    """None when the file is still the one that was scored, else the skip reason."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            return "missing_file"
        if size is not None and info.st_size != size:
            return "changed_file"
        if sha256 and _sha256(path) != sha256:
            return "changed_file"
    except OSError:
        return "missing_file"
    return None


def _write_atomically(out_csv: Path, rows: list[dict[str, str]]) -> None:
    """Write the CSV next to its target, then rename: readers never see half a file."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out_csv, text.getvalue().encode("utf-8"))


def _filters(barcodes: Sequence[str], since: datetime | None) -> str:
    parts = [f"plate {', '.join(barcodes)}"] if barcodes else []
    if since is not None:
        parts.append(f"since {since.isoformat()}")
    return f" ({'; '.join(parts)})" if parts else ""


def export_human_labels(
    db: Database,
    out_csv: Path,
    scheme: str | None = None,
    barcodes: Sequence[str] = (),
    since: datetime | None = None,
) -> ExportSummary:
    """Write the latest human label of every matching image to `out_csv` as a manifest.

    `scheme` None keeps each label's own scheme (an error when they mix); 'marco4' maps
    ten-way labels to four-way; 'merck10' skips four-way ones. Nothing is written when
    no row survives. Raises ExportError for bad input.
    """
    check_scheme(scheme)
    since = _naive_utc(since) if since is not None else None
    barcodes = list(dict.fromkeys(barcodes))
    with db.session() as session:
        if session.scalar(select(HumanScore.id).limit(1)) is None:
            raise ExportError("no human scores in the database: correct some scores first")
        if barcodes:
            found = set(session.scalars(select(Plate.barcode).where(Plate.barcode.in_(barcodes))))
            unknown = [b for b in barcodes if b not in found]
            if unknown:
                raise ExportError(f"no plate with barcode {', '.join(unknown)}")
        latest = _latest(session, barcodes, since)
    if not latest:
        raise ExportError(f"no human scores match{_filters(barcodes, since)}")

    rows: list[dict[str, str]] = []
    skipped: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    schemes: Counter[str] = Counter()
    for item in latest:
        path = Path(item.uri)
        converted = "failed_image" if item.status == ImageStatus.FAILED else None
        converted = converted or _convert(item.label, item.scheme, scheme)
        if isinstance(converted, tuple):
            converted = _file_problem(path, item.sha256, item.size_bytes) or converted
        if isinstance(converted, str):
            skipped[converted] += 1
            shown = examples.setdefault(converted, [])
            if len(shown) < EXAMPLES_PER_REASON:
                shown.append(item.uri)
            continue
        label, label_scheme = converted
        schemes[label_scheme] += 1
        located = item.drop_number is not None and item.barcode is not None
        group = f"{item.barcode}/{item.well}/{item.drop_number}" if located else item.uri
        rows.append(
            {
                "path": str(path if path.is_absolute() else path.resolve()),
                "label": label,
                "group": group,
                "barcode": item.barcode or "",
                "well": item.well or "",
                "drop": "" if item.drop_number is None else str(item.drop_number),
                "imaging_mode": item.imaging_mode,
                "imaged_at": _iso(item.imaged_at),
                "image_id": str(item.image_id),
                "original_label": item.label,
                "original_scheme": item.scheme,
                "who": item.who,
                "source": item.source,
                "scored_at": _iso(item.created_at),
            }
        )
    ordered_skips = {r: skipped[r] for r in SKIP_REASONS if skipped[r]}
    if not rows:
        raise ExportError(
            f"nothing to export{_filters(barcodes, since)}: {describe_skips(ordered_skips)}"
        )
    if len(schemes) > 1:
        mix = " and ".join(f"{s} ({n})" for s, n in sorted(schemes.items()))
        raise ExportError(
            f"human scores mix {mix} labels: choose a scheme "
            "(marco4 maps ten-way labels to four-way; merck10 skips four-way ones)"
        )
    chosen = next(iter(schemes))
    _write_atomically(Path(out_csv), rows)
    found_labels = Counter(row["label"] for row in rows)
    return ExportSummary(
        out=str(out_csv),
        scheme=chosen,
        written=len(rows),
        considered=len(latest),
        counts={label: found_labels.get(label, 0) for label in labels_of(chosen)},
        skipped=ordered_skips,
        skipped_examples={r: examples[r] for r in ordered_skips},
    )
