"""Inspection manifests: JSON (or CSV) metadata that names plate, inspection, wells and drops.

One shape serves the robot upload (`POST /api/v1/inspections`, part `metadata`) and the
sidecar files of home-built rigs (`inspection.json` / `inspection.csv`):

    {"barcode": "P1", "plate_type": "96x2", "imaged_at": "2024-05-01T09:30:00Z",
     "imager": "rig-1", "inspection_id": "optional",
     "images": [{"file": "A1_1.jpg", "well": "A1", "drop": 1, "imaging_mode": "visible"}]}

`barcode` and `imaged_at` (ISO 8601; no offset means UTC) are required, `imager` ('' if
absent), `plate_type` and `inspection_id` are optional; per image `file` and `well` are
required, `drop` defaults to 1 and `imaging_mode` to 'visible'. A sidecar CSV has one
row per image with the columns `file, well, drop, barcode, imaged_at` and optionally
`imager, imaging_mode, plate_type, inspection_id`. Unknown keys are errors (typos must
not pass silently). Text is checked by `imager_adapters.fields`: barcode and imager are
letters, digits and a little punctuation (no markup), the imaging mode is one of
`IMAGING_MODES` (any case; stored in lower case), and no field holds control characters.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from imager_adapters.fields import check_barcode, check_imager, check_imaging_mode, check_text
from imager_adapters.record import ImageRecord
from imager_adapters.wells import GeometryError, PlateType, parse_plate_type, split_well, well_name

INSPECTION_KEYS = ("barcode", "plate_type", "imaged_at", "imager", "inspection_id")
IMAGE_KEYS = ("file", "well", "drop", "imaging_mode")
MAX_TEXT = 128


class ManifestError(ValueError):
    """Metadata that cannot describe an inspection; the message says where and why."""


@dataclass(frozen=True)
class ManifestEntry:
    """One image named by a manifest, with its inspection."""

    file: str
    barcode: str
    well: str
    drop: int
    imaged_at: datetime
    imager: str = ""
    imaging_mode: str = "visible"
    plate: PlateType | None = None
    inspection_id: str | None = None

    def record(self, path: Path, adapter: str) -> ImageRecord:
        """The ImageRecord for the stored file at `path`."""
        return ImageRecord(
            path=path,
            barcode=self.barcode,
            well=self.well,
            drop=self.drop,
            inspected_at=self.imaged_at,
            imager=self.imager,
            imaging_mode=self.imaging_mode,
            plate_wells=self.plate.wells if self.plate else None,
            plate_drops=self.plate.drops if self.plate else None,
            inspection_id=self.inspection_id,
            adapter=adapter,
        )


def _text(
    where: str, value: Any, required: bool, check: Callable[[str], str] = check_text
) -> str | None:
    """The stripped text (None when absent), passed through `check` (a field validator)."""
    if value is None or value == "":
        if required:
            raise ManifestError(f"{where}: required")
        return None
    if not isinstance(value, str):
        raise ManifestError(f"{where}: expected a string, got {value!r}")
    value = value.strip()
    if not value or len(value) > MAX_TEXT:
        raise ManifestError(f"{where}: must be 1 to {MAX_TEXT} characters")
    try:
        return check(value)
    except ValueError as exc:
        raise ManifestError(f"{where}: {exc}") from None


def _time(where: str, value: Any) -> datetime:
    text = _text(where, value, required=True)
    try:
        return datetime.fromisoformat(text)  # type: ignore[arg-type]
    except ValueError:
        raise ManifestError(f"{where}: {text!r} is not an ISO 8601 time") from None


def _drop(where: str, value: Any) -> int:
    if value is None or value == "":
        return 1
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4:
        raise ManifestError(f"{where}: expected a drop number 1 to 4, got {value!r}")
    return value


def _plate(where: str, value: Any) -> PlateType | None:
    text = _text(where, value, required=False)
    if text is None:
        return None
    try:
        return parse_plate_type(text)
    except GeometryError as exc:
        raise ManifestError(f"{where}: {exc}") from None


def _check_keys(where: str, item: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(item) - set(allowed))
    if unknown:
        raise ManifestError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(allowed)})")


def _inspection(where: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "barcode": _text(f"{where}barcode", fields.get("barcode"), True, check_barcode),
        "imaged_at": _time(f"{where}imaged_at", fields.get("imaged_at")),
        "imager": _text(f"{where}imager", fields.get("imager"), False, check_imager) or "",
        "plate": _plate(f"{where}plate_type", fields.get("plate_type")),
        "inspection_id": _text(f"{where}inspection_id", fields.get("inspection_id"), False),
    }


def _entry(where: str, item: Any, top: Mapping[str, Any], per_image: bool) -> ManifestEntry:
    if not isinstance(item, Mapping):
        raise ManifestError(f"{where}: expected an object")
    _check_keys(where, item, IMAGE_KEYS + (INSPECTION_KEYS if per_image else ()))
    inspection = _inspection(f"{where}.", {**top, **item}) if per_image else top
    plate: PlateType | None = inspection["plate"]
    try:
        well = well_name(*split_well(_text(f"{where}.well", item.get("well"), True) or ""))
        drop = _drop(f"{where}.drop", item.get("drop"))
        if plate is not None:
            well, drop = plate.check_well(well), plate.check_drop(drop)
    except GeometryError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    return ManifestEntry(
        file=_text(f"{where}.file", item.get("file"), required=True) or "",
        well=well,
        drop=drop,
        imaging_mode=_text(
            f"{where}.imaging_mode", item.get("imaging_mode"), False, check_imaging_mode
        )
        or "visible",
        **inspection,
    )


def parse_manifest(data: Any, *, per_image: bool = False) -> list[ManifestEntry]:
    """Validate a manifest; `per_image` lets each image carry its own inspection fields."""
    if not isinstance(data, Mapping):
        raise ManifestError("metadata: expected a JSON object")
    _check_keys("metadata", data, (*INSPECTION_KEYS, "images"))
    images = data.get("images")
    if not isinstance(images, list) or not images:
        raise ManifestError("images: expected a non-empty list")
    top = data if per_image else _inspection("", data)
    entries = [_entry(f"images[{n}]", item, top, per_image) for n, item in enumerate(images)]
    seen_files: dict[str, int] = {}
    seen_slots: dict[tuple[Any, ...], int] = {}
    for n, entry in enumerate(entries):
        if entry.file in seen_files:
            raise ManifestError(
                f"images[{n}].file: {entry.file!r} is also images[{seen_files[entry.file]}]"
            )
        seen_files[entry.file] = n
        slot = (entry.barcode, entry.imaged_at, entry.imager, entry.well, entry.drop)
        slot += (entry.imaging_mode,)
        if slot in seen_slots:
            raise ManifestError(
                f"images[{n}]: well {entry.well} drop {entry.drop} ({entry.imaging_mode}) "
                f"is also images[{seen_slots[slot]}]"
            )
        seen_slots[slot] = n
    return entries


def manifest_from_csv(text: str) -> list[ManifestEntry]:
    """A sidecar CSV: one row per image, each with its own inspection columns."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        raise ManifestError("sidecar CSV: empty")
    rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    return parse_manifest(
        {"images": [{k: v for k, v in row.items() if v != ""} for row in rows]},
        per_image=True,
    )
