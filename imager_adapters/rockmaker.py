"""Formulatrix Rock Imager / Rock Maker native image store, read through a metadata export.

Layout of the store (what the Rock Imager writes; see ../shared/data/README.md):

    <store>/WellImages/<plateID mod 1000>/plateID_<plateID>/batchID_<batchID>/
        wellNum_<n>/profileID_<p>/d<drop>_r<region>_<kind>.jpg

The path carries numbers only. Barcode, inspection time, imager and well name come from
rows of the Rock Maker database exported as CSV with the columns of
`../shared/data/formulatrix_90j8/90j8.csv` (one row per plate, batch, well, profile, drop):

    BatchID, DateImaged, DropNum, ImagerName, PlateID, ProfileID, WellColNum, WellNum,
    WellRowLetter

Mapping (assumptions stated):
- barcode: a `Barcode` column if present, else the CSV file's name without `.csv` (the
  export writes one `<barcode>.csv` per plate, as xchem/formulatrix_pipe does);
- inspection time: `DateImaged` (ISO date or date-time, naive = UTC); inspection id:
  the batchID (one batch = one imaging of the plate); imager: `ImagerName`;
- well: `WellRowLetter` + `WellColNum`, cross-checked against `WellNum` (row-major);
  without the letter/column the well comes from `WellNum` and the plate type;
- plate type: a `PlateType` column ("96x2") if present; else the wells follow from the
  numbering (B1 = wellNum 13 on a 96-well plate, 25 on a 384-well plate) and the drops
  per well are the largest `DropNum` listed for the plate (the export lists every drop
  of the plate type, imaged or not): 90j8.csv is a 96-well, 2-drop plate;
- imaging mode: an `ImagingMode` column if present, else from the file's kind:
  `ef` (extended focus, the composed visible-light image) -> `visible`. Other kinds are
  rejected with their name; pass `kinds=` to map more. A plate imaged with several
  capture profiles (visible, UV) needs the `ImagingMode` column, or its images would
  land as versions of one slot.

Where the metadata comes from: the CSV files or folders given as `metadata`, plus every
`*.csv` directly inside the folder that holds `WellImages` (a sidecar export next to the
store). They are read once; when an image names a plate/batch not in them, the sources
are looked at again (at most once a second) so an export written later is picked up.
A path whose plate/batch is still unknown is a transient Rejection ("no Rock Maker
metadata for plateID 692 batchID 616"); a known batch without that well or drop is a
permanent one.
"""

from __future__ import annotations

import csv
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from imager_adapters.record import ImageRecord, Rejection
from imager_adapters.wells import (
    GeometryError,
    PlateType,
    layout_from_number,
    parse_plate_type,
    plate_type,
    split_well,
    well_name,
)

KIND_MODES: Mapping[str, str] = {"ef": "visible"}
REQUIRED_COLUMNS = ("PlateID", "BatchID", "WellNum", "DropNum", "DateImaged", "ImagerName")

_TREE = re.compile(
    r"(?:^|/)WellImages/(?P<mod>\d+)/plateID_(?P<plate>\d+)/batchID_(?P<batch>\d+)/"
    r"wellNum_(?P<well>\d+)/profileID_(?P<profile>\d+)/(?P<file>[^/]+)$",
    re.IGNORECASE,
)
_FILE = re.compile(
    r"^d(?P<drop>\d+)_r(?P<region>\d+)_(?P<kind>[A-Za-z0-9]+)\.(?:jpe?g|png|tiff?|bmp)$",
    re.IGNORECASE,
)


class MetadataError(ValueError):
    """A metadata source that cannot be used at all (missing, unreadable)."""


@dataclass(frozen=True)
class _Batch:
    barcode: str
    imaged_at: datetime
    imager: str


@dataclass
class _Index:
    """Everything the CSV rows say, keyed by Rock Maker's numbers."""

    batches: dict[tuple[int, int], _Batch] = field(default_factory=dict)
    wells: dict[tuple[int, int, int, int | None], str] = field(default_factory=dict)
    drops: set[tuple[int, int, int, int | None, int]] = field(default_factory=set)
    modes: dict[tuple[int, int, int, int | None, int], str] = field(default_factory=dict)
    plates: dict[int, tuple[int | None, int]] = field(default_factory=dict)
    conflicts: dict[tuple[int, int], str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Row:
    source: str
    line: int
    plate: int
    batch: int
    well_number: int
    profile: int | None
    drop: int
    barcode: str
    imaged_at: datetime
    imager: str
    well: str | None
    plate_type: PlateType | None
    mode: str | None


def _int(row: Mapping[str, str], column: str) -> int:
    text = (row.get(column) or "").strip()
    if not text.isdigit():
        raise ValueError(f"{column} {text!r} is not a number")
    return int(text)


def _parse_row(source: Path, line: int, row: Mapping[str, str]) -> _Row:
    letter, column = (row.get("WellRowLetter") or "").strip(), (row.get("WellColNum") or "")
    kind = (row.get("PlateType") or "").strip()
    try:
        imaged_at = datetime.fromisoformat((row.get("DateImaged") or "").strip())
    except ValueError:
        raise ValueError(f"DateImaged {row.get('DateImaged')!r} is not an ISO date") from None
    return _Row(
        source=source.name,
        line=line,
        plate=_int(row, "PlateID"),
        batch=_int(row, "BatchID"),
        well_number=_int(row, "WellNum"),
        profile=_int(row, "ProfileID") if (row.get("ProfileID") or "").strip() else None,
        drop=_int(row, "DropNum"),
        barcode=(row.get("Barcode") or "").strip() or source.stem,
        imaged_at=imaged_at,
        imager=(row.get("ImagerName") or "").strip(),
        well=well_name(*split_well(f"{letter}{column.strip()}")) if letter else None,
        plate_type=parse_plate_type(kind) if kind else None,
        mode=(row.get("ImagingMode") or "").strip() or None,
    )


def read_metadata_csv(path: Path) -> tuple[list[_Row], list[str]]:
    """The usable rows of one export, and a line per row or file that is not usable."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                return [], [f"{path.name}: no column {', '.join(missing)}"]
            rows, problems = [], []
            for line, row in enumerate(reader, start=2):
                try:
                    rows.append(_parse_row(path, line, row))
                except (ValueError, GeometryError) as exc:
                    problems.append(f"{path.name} line {line}: {exc}")
            return rows, problems
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return [], [f"{path.name}: unreadable ({exc})"]


def _plate_types(rows: Iterable[_Row], index: _Index) -> dict[int, PlateType | None]:
    """Per plate: the plate type the rows state or imply (None: the wells are not implied).

    Also fills `index.plates` with (wells or None, drops per well) for every plate.
    """
    stated: dict[int, set[str]] = {}
    sizes: dict[int, set[int]] = {}
    drops: dict[int, int] = {}
    for row in rows:
        drops[row.plate] = max(drops.get(row.plate, 1), row.drop)
        if row.plate_type is not None:
            stated.setdefault(row.plate, set()).add(row.plate_type.name)
        if row.well is not None:
            try:
                size = layout_from_number(row.well_number, row.well)
            except GeometryError:
                continue  # reported, and the row dropped, by build_index
            if size is not None:
                sizes.setdefault(row.plate, set()).add(size)
    types: dict[int, PlateType | None] = {}
    for plate, most in drops.items():
        try:
            if plate in stated:
                if len(stated[plate]) > 1:
                    raise GeometryError(f"plate types {sorted(stated[plate])} for plateID {plate}")
                types[plate] = parse_plate_type(next(iter(stated[plate])))
            elif len(sizes.get(plate, ())) > 1:
                raise GeometryError(f"wellNum numbering of plateID {plate} fits no single plate")
            else:
                wells = next(iter(sizes[plate])) if plate in sizes else None
                types[plate] = plate_type(wells, most) if wells else None
        except GeometryError as exc:
            index.problems.append(str(exc))
            types[plate] = None
        kind = types[plate]
        index.plates[plate] = (kind.wells, kind.drops) if kind else (None, most)
    return types


def build_index(rows: Sequence[_Row], problems: Sequence[str] = ()) -> _Index:
    """Merge the rows of every source into one lookup index."""
    index = _Index(problems=list(problems))
    types = _plate_types(rows, index)
    for row in rows:
        key = (row.plate, row.batch)
        batch = _Batch(row.barcode, row.imaged_at, row.imager)
        known = index.batches.setdefault(key, batch)
        if known != batch and key not in index.conflicts:
            index.conflicts[key] = (
                f"conflicting Rock Maker metadata for plateID {row.plate} batchID {row.batch}: "
                f"{known} and, in {row.source} line {row.line}, {batch}"
            )
        kind = types.get(row.plate)
        well = row.well
        try:
            if well is None:
                if kind is None:
                    raise GeometryError("no WellRowLetter/WellColNum and no plate type")
                well = kind.well_from_number(row.well_number)
            else:
                layout_from_number(row.well_number, well)  # fits some plate at all?
                if kind is not None and kind.well_number(well) != row.well_number:
                    raise GeometryError(f"wellNum {row.well_number} is not {well} on a {kind.name}")
        except GeometryError as exc:
            index.problems.append(f"{row.source} line {row.line}: {exc}")
            continue
        index.wells[(row.plate, row.batch, row.well_number, row.profile)] = well
        index.drops.add((row.plate, row.batch, row.well_number, row.profile, row.drop))
        if row.mode:
            index.modes[(row.plate, row.batch, row.well_number, row.profile, row.drop)] = row.mode
    return index


class _Sources:
    """CSV files and folders of CSVs, re-read only when a file changed."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self._cache: dict[Path, tuple[tuple[int, int], list[_Row], list[str]]] = {}
        self.signature: tuple[tuple[str, int, int], ...] | None = None

    def files(self) -> list[tuple[Path, bool]]:
        """(CSV file, named explicitly): a folder's CSVs that are not exports are skipped."""
        found: list[tuple[Path, bool]] = []
        for path in self.paths:
            if path.is_dir():
                found.extend((p, False) for p in sorted(path.glob("*.csv")) if p.is_file())
            elif path.is_file():
                found.append((path, True))
        return found

    def load(self) -> tuple[list[_Row], list[str], bool]:
        """All rows and problems; the flag says whether anything changed since last time."""
        rows: list[_Row] = []
        problems: list[str] = []
        signature = []
        for path, explicit in self.files():
            try:
                stat = path.stat()
            except OSError:
                continue
            key = (stat.st_mtime_ns, stat.st_size)
            signature.append((str(path), *key))
            cached = self._cache.get(path)
            if cached is None or cached[0] != key:
                file_rows, file_problems = read_metadata_csv(path)
                if not explicit and not file_rows:
                    file_problems = []  # a folder's unrelated CSV is not ours to judge
                cached = (key, file_rows, file_problems)
                self._cache[path] = cached
            rows.extend(cached[1])
            problems.extend(cached[2])
        changed = tuple(signature) != self.signature
        self.signature = tuple(signature)
        return rows, problems, changed


def _missing(where: str, index: _Index) -> str:
    reason = f"no Rock Maker metadata for {where}"
    if index.problems:
        reason += f" (unusable metadata: {'; '.join(index.problems[:3])})"
    return reason


class RockMakerTree:
    """`WellImages/.../d<drop>_r<region>_<kind>.jpg` mapped through Rock Maker CSV exports."""

    def __init__(
        self,
        metadata: Iterable[str | Path] = (),
        *,
        name: str = "rockmaker-tree",
        kinds: Mapping[str, str] = KIND_MODES,
        refresh_seconds: float = 1.0,
    ) -> None:
        self.name = name
        self.kinds = {k.lower(): v for k, v in kinds.items()}
        self.refresh_seconds = refresh_seconds
        self.metadata = [Path(p) for p in metadata]
        for path in self.metadata:
            if not path.exists():
                raise MetadataError(f"Rock Maker metadata: no such file or folder: {path}")
        self._lock = threading.Lock()
        self._stores: dict[Path, tuple[_Sources, _Index, float]] = {}

    def _index(self, store: Path, force: bool) -> _Index:
        """The index for one store (configured sources plus its sidecar CSVs)."""
        with self._lock:
            entry = self._stores.get(store)
            now = time.monotonic()
            if entry is not None and not (force and now - entry[2] >= self.refresh_seconds):
                return entry[1]
            sources = entry[0] if entry else _Sources([*self.metadata, store])
            rows, problems, changed = sources.load()
            index = build_index(rows, problems) if changed or entry is None else entry[1]
            self._stores[store] = (sources, index, now)
            return index

    def parse(self, path: Path) -> ImageRecord | Rejection | None:
        tree = _TREE.search(Path(path).as_posix())
        if tree is None:
            return None
        plate, batch = int(tree["plate"]), int(tree["batch"])
        well_number, profile = int(tree["well"]), int(tree["profile"])
        if int(tree["mod"]) != plate % 1000:
            return self._reject(path, f"folder {tree['mod']} is not plateID {plate} mod 1000")
        file = _FILE.match(tree["file"])
        if file is None:
            return self._reject(
                path, f"{tree['file']!r} is not a Rock Maker image name (d<drop>_r<region>_<kind>)"
            )
        drop, kind = int(file["drop"]), file["kind"].lower()
        store = Path(path).parents[6]
        index = self._index(store, force=False)
        if (plate, batch) not in index.batches:
            index = self._index(store, force=True)
        where = f"plateID {plate} batchID {batch}"
        if (plate, batch) not in index.batches:
            return self._reject(path, _missing(where, index), transient=True)
        if (plate, batch) in index.conflicts:
            return self._reject(path, index.conflicts[(plate, batch)])
        key = (plate, batch, well_number, profile)
        if key not in index.wells:
            key = (plate, batch, well_number, None)
        well = index.wells.get(key)
        if well is None:
            where += f" wellNum {well_number} profileID {profile}"
            return self._reject(path, _missing(where, index))
        if (*key, drop) not in index.drops:
            return self._reject(
                path, f"Rock Maker metadata for {where} wellNum {well_number} has no drop {drop}"
            )
        mode = index.modes.get((*key, drop)) or self.kinds.get(kind)
        if mode is None:
            known = ", ".join(f"{k} ({v})" for k, v in sorted(self.kinds.items()))
            return self._reject(path, f"Rock Maker image kind {kind!r} is not ingested ({known})")
        info = index.batches[(plate, batch)]
        wells, drops = index.plates[plate]
        return ImageRecord(
            path=Path(path),
            barcode=info.barcode,
            well=well,
            drop=drop,
            inspected_at=info.imaged_at,
            imager=info.imager,
            imaging_mode=mode,
            plate_wells=wells,
            plate_drops=drops,
            inspection_id=str(batch),
            adapter=self.name,
            extra={"plate_id": plate, "batch_id": batch, "profile_id": profile, "kind": kind},
        )

    def _reject(self, path: Path, reason: str, transient: bool = False) -> Rejection:
        return Rejection(Path(path), reason, self.name, transient)


ROCKMAKER_TREE = RockMakerTree()
