"""Configurable adapters for Rigaku Minstrel / CrystalTrak exports and home-built rigs.

Two kinds, built from a spec (a preset name, or a mapping / JSON object):

- `PatternAdapter`: a regular expression searched in the file's path (forward slashes;
  anchor it with `$`). Named groups: `barcode` (required); `well`, or `row` + `column`,
  or `well_number` (row-major, needs a plate type); `drop` (default 1); `time`, or
  `date` + optional `clock` (joined by a space), read with `time_format` (strptime;
  ISO 8601 when absent); optional `imager`, `mode` (mapped through `modes`),
  `plate_type` ("96x2") and `inspection` (the imager's inspection id). A naive time is
  UTC unless `timezone` (e.g. "Europe/London") says where the imager's clock is.
- `SidecarAdapter`: files whose name matches `glob` take their plate, well, drop and
  time from a sidecar file in the same folder (`inspection.json` or `inspection.csv`,
  the manifest shape of `imager_adapters.manifest`). A configured sidecar adapter
  (`"glob"` in its spec) claims every matching file and waits (transient rejection)
  for a sidecar that is missing or does not list the file yet; the built-in `sidecar`
  adapter only claims files in folders that already hold a sidecar.

Presets. These layouts are ASSUMPTIONS made for this project (no vendor documentation
or sample export was at hand); check them against a real export and override any field
(`{"preset": "rigaku-crystaltrak", "time_format": ..., "imager": ...}`) or write your own:

- `rigaku-crystaltrak` (Rigaku Minstrel imager, CrystalTrak image export):
  `<root>/<barcode>/<YYYYMMDD_HHMMSS>/<barcode>_<well>_<drop>[_<mode>].jpg`, well `A1`
  or `A01`, drop 1-4, mode `vis` (-> visible), `uv`, `sonicc` or `ir`; the timestamp
  folder is the inspection time (naive = UTC), e.g.
  `CT00123/20240501_093000/CT00123_B07_2_vis.jpg`; imager '' unless configured.
- `homebuilt` (a camera-on-a-gantry rig writing one folder per plate and inspection):
  `<root>/<barcode>/<YYYY-MM-DD_HH-MM-SS>/<well>_d<drop>[_<mode>].jpg`, e.g.
  `plate42/2024-05-01_09-30-00/B7_d2.jpg`; `mode` is taken as written (default visible).
- `sidecar`: any image in a folder holding `inspection.json` or `inspection.csv`.
"""

from __future__ import annotations

import json
import re
import threading
import zoneinfo
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import datetime
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from imager_adapters.manifest import (
    ManifestEntry,
    ManifestError,
    manifest_from_csv,
    parse_manifest,
)
from imager_adapters.record import ImageRecord, Rejection
from imager_adapters.wells import GeometryError, parse_plate_type, split_well, well_name

IMAGE_EXT = r"\.(?i:jpe?g|png|tiff?|bmp)$"
SIDECARS = ("inspection.json", "inspection.csv")

PRESETS: dict[str, dict[str, Any]] = {
    "rigaku-crystaltrak": {
        "regex": r"(?:^|/)(?P<barcode>[^/]+)/(?P<time>\d{8}_\d{6})/(?P=barcode)_"
        r"(?P<well>[A-Pa-p]\d{1,2})_(?P<drop>[1-4])(?:_(?P<mode>vis|uv|sonicc|ir))?" + IMAGE_EXT,
        "time_format": "%Y%m%d_%H%M%S",
        "modes": {"vis": "visible", "uv": "uv", "sonicc": "sonicc", "ir": "ir"},
        "description": "Rigaku Minstrel / CrystalTrak export (assumed layout)",
    },
    "homebuilt": {
        "regex": r"(?:^|/)(?P<barcode>[^/]+)/(?P<time>\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})/"
        r"(?P<well>[A-Pa-p]\d{1,2})_d(?P<drop>[1-4])(?:_(?P<mode>[A-Za-z]+))?" + IMAGE_EXT,
        "time_format": "%Y-%m-%d_%H-%M-%S",
        "description": "home-built rig, one folder per plate and inspection (assumed layout)",
    },
    "sidecar": {
        "glob": "*",
        "require_sidecar": False,
        "description": "images named by an inspection.json / inspection.csv beside them",
    },
}


class PatternError(ValueError):
    """An imager pattern spec that cannot be used."""


class PatternAdapter:
    """Path -> record through a regular expression with named groups."""

    def __init__(
        self,
        name: str,
        regex: str,
        *,
        time_format: str | None = None,
        imager: str = "",
        imaging_mode: str = "visible",
        modes: Mapping[str, str] | None = None,
        plate_type: str | None = None,
        timezone: str | None = None,
        description: str = "",
    ) -> None:
        self.name, self.description = name, description
        try:
            self.regex = re.compile(regex)
            self.plate = parse_plate_type(plate_type) if plate_type else None
            self.timezone = zoneinfo.ZoneInfo(timezone) if timezone else None
        except (re.error, GeometryError, zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise PatternError(f"imager pattern {name!r}: {exc}") from None
        groups = set(self.regex.groupindex)
        needs = {
            "barcode": {"barcode"} <= groups,
            "well (or row + column, or well_number)": bool(
                {"well"} <= groups or {"row", "column"} <= groups or {"well_number"} <= groups
            ),
            "time (or date)": bool({"time", "date"} & groups),
        }
        missing = [what for what, ok in needs.items() if not ok]
        if missing:
            raise PatternError(
                f"imager pattern {name!r}: the regex needs named groups for {', '.join(missing)}"
            )
        self.time_format, self.imager, self.imaging_mode = time_format, imager, imaging_mode
        self.modes = {k.lower(): v for k, v in (modes or {}).items()}

    def _time(self, groups: Mapping[str, str | None]) -> datetime:
        stamp = groups.get("time") or " ".join(
            part for part in (groups.get("date"), groups.get("clock")) if part
        )
        try:
            moment = (
                datetime.strptime(stamp, self.time_format)
                if self.time_format
                else datetime.fromisoformat(stamp)
            )
        except ValueError:
            raise ValueError(
                f"time {stamp!r} does not match {self.time_format or 'ISO 8601'}"
            ) from None
        if moment.tzinfo is None and self.timezone is not None:
            moment = moment.replace(tzinfo=self.timezone)
        return moment

    def _well(self, groups: Mapping[str, str | None], plate_type: str | None) -> str:
        plate = parse_plate_type(plate_type) if plate_type else self.plate
        if groups.get("well"):
            well = well_name(*split_well(groups["well"] or ""))
        elif groups.get("row") and groups.get("column"):
            well = well_name(*split_well(f"{groups['row']}{groups['column']}"))
        else:
            if plate is None:
                raise GeometryError("a well number needs a plate type")
            return plate.well_from_number(int(groups.get("well_number") or 0))
        return plate.check_well(well) if plate else well

    def parse(self, path: Path) -> ImageRecord | Rejection | None:
        match = self.regex.search(Path(path).as_posix())
        if match is None:
            return None
        groups = match.groupdict()
        try:
            plate_type = groups.get("plate_type")
            plate = parse_plate_type(plate_type) if plate_type else self.plate
            raw_mode = (groups.get("mode") or "").lower()
            return ImageRecord(
                path=Path(path),
                barcode=groups["barcode"] or "",
                well=self._well(groups, plate_type),
                drop=int(groups.get("drop") or 1),
                inspected_at=self._time(groups),
                imager=groups.get("imager") or self.imager,
                imaging_mode=self.modes.get(raw_mode, raw_mode) or self.imaging_mode,
                plate_wells=plate.wells if plate else None,
                plate_drops=plate.drops if plate else None,
                inspection_id=groups.get("inspection"),
                adapter=self.name,
            )
        except (ValueError, GeometryError) as exc:
            return Rejection(Path(path), str(exc), self.name)


class SidecarAdapter:
    """Path -> record through a sidecar manifest in the file's folder."""

    def __init__(
        self,
        name: str,
        glob: str = "*",
        *,
        sidecars: Sequence[str] = SIDECARS,
        require_sidecar: bool = True,
        description: str = "",
        cache_size: int = 256,
    ) -> None:
        self.name, self.glob, self.description = name, glob, description
        self.sidecars = tuple(sidecars)
        self.require_sidecar = require_sidecar
        self._cache: OrderedDict[Path, tuple[tuple[int, int], Any]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def _entries(self, sidecar: Path) -> dict[str, ManifestEntry]:
        """The sidecar's entries by file name (cached until the sidecar changes)."""
        stat = sidecar.stat()
        key = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._cache.get(sidecar)
            if cached is not None and cached[0] == key:
                self._cache.move_to_end(sidecar)
                if isinstance(cached[1], ManifestError):
                    raise cached[1]
                return cached[1]
        text = sidecar.read_text(encoding="utf-8-sig")
        try:
            if sidecar.suffix.lower() == ".json":
                try:
                    data = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ManifestError(f"not JSON ({exc})") from None
                entries: Any = parse_manifest(data, per_image=True)
            else:
                entries = manifest_from_csv(text)
            result: Any = {entry.file: entry for entry in entries}
        except ManifestError as exc:
            result = exc
        with self._lock:
            self._cache[sidecar] = (key, result)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        if isinstance(result, ManifestError):
            raise result
        return result

    def parse(self, path: Path) -> ImageRecord | Rejection | None:
        path = Path(path)
        if not fnmatch(path.name, self.glob):
            return None
        found = (path.parent / name for name in self.sidecars)
        sidecar = next((candidate for candidate in found if candidate.is_file()), None)
        if sidecar is None:
            if not self.require_sidecar:
                return None
            return Rejection(
                path, f"no sidecar ({' or '.join(self.sidecars)}) in {path.parent}", self.name, True
            )
        try:
            entry = self._entries(sidecar).get(path.name)
        except (ManifestError, OSError, UnicodeDecodeError) as exc:
            return Rejection(path, f"sidecar {sidecar}: {exc}", self.name, True)
        if entry is None:
            return Rejection(path, f"{path.name} is not listed in {sidecar}", self.name, True)
        return entry.record(path, self.name)


Adapter = PatternAdapter | SidecarAdapter
_SPEC_KEYS = {
    "name",
    "preset",
    "regex",
    "time_format",
    "imager",
    "imaging_mode",
    "modes",
    "plate_type",
    "timezone",
    "description",
    "glob",
    "sidecars",
    "require_sidecar",
}


def pattern_adapter(spec: str | Mapping[str, Any]) -> Adapter:
    """An adapter from a preset name, a JSON object, or a mapping (see the module doc)."""
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("{"):
            try:
                spec = json.loads(text)
            except json.JSONDecodeError as exc:
                raise PatternError(f"imager pattern {text[:40]!r}...: not JSON ({exc})") from None
        else:
            spec = {"preset": text}
    if not isinstance(spec, Mapping):
        raise PatternError(f"imager pattern {spec!r}: expected a preset name or an object")
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise PatternError(f"imager pattern: unknown key {unknown[0]!r}")
    fields = dict(spec)
    preset = fields.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise PatternError(
                f"no imager pattern preset {preset!r} (presets: {', '.join(PRESETS)})"
            )
        fields = {**PRESETS[preset], **fields}
        fields.setdefault("name", preset)
    name = fields.pop("name", None)
    if not name:
        raise PatternError("imager pattern: give it a name")
    try:
        if "glob" in fields:
            return SidecarAdapter(name, **fields)
        if "regex" not in fields:
            raise PatternError(f"imager pattern {name!r}: needs a regex or a glob")
        return PatternAdapter(name, **fields)
    except TypeError as exc:
        raise PatternError(f"imager pattern {name!r}: {exc}") from None


def presets() -> list[Adapter]:
    """The built-in preset adapters."""
    return [pattern_adapter(name) for name in PRESETS]
