"""What an adapter makes of one image file: an ImageRecord, or a Rejection with its reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ImageRecord:
    """Where one image belongs: plate, inspection, well and drop.

    `plate_wells` (96 / 384) and `plate_drops` (drops per well) are given when the
    source states them; None means 'infer from the wells and drops seen'.
    `inspected_at` is naive UTC or timezone-aware; a date-only source gives midnight.
    """

    path: Path
    barcode: str
    well: str
    drop: int
    inspected_at: datetime
    imager: str = ""
    imaging_mode: str = "visible"
    plate_wells: int | None = None
    plate_drops: int | None = None
    inspection_id: str | None = None
    adapter: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rejection:
    """A file an adapter will not take, and why.

    `transient` marks a reason that may go away by itself (the metadata that names the
    file has not been written yet): a watcher keeps such a file pending for a while and
    asks again before it records the failure; a one-shot ingest records it at once.
    """

    path: Path
    reason: str
    adapter: str = ""
    transient: bool = False
