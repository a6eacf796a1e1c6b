"""Write whole synthetic plates in an imager's file layout, with their ground truth.

A layout turns (plate, well, drop) into a relative file path and may write
metadata files once the images exist. Built in:

- `formulatrix-flat`: `<barcode>_<YYYY-MM-DD>_<imager>-<n>drop/<barcode>_<col:02d><row>_<drop>.jpg`
  (what `imager_adapters.formulatrix` reads; the real plate in ../shared uses it);
- `rock-maker`: the native Rock Maker tree `WellImages/<plateID mod 1000>/plateID_<id>/
  batchID_<id>/wellNum_<n>/profileID_<p>/d<drop>_r<region>_ef.jpg`
  with `<barcode>.csv` beside `WellImages/`, holding the Rock Maker rows (BatchID,
  DateImaged, DropNum, ImagerName, PlateID, ProfileID, WellColNum, WellNum,
  WellRowLetter) like ../shared/data/formulatrix_90j8/90j8.csv.

Other layouts plug in with `register_layout(obj)`: any object with a `name`, a
`path(plate, well, drop, index)` and a `finish(root, plate, images)`.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import numpy as np

from imager_adapters.wells import PlateType, plate_type, split_well
from marco_svc.labels import MERCK10_LABELS
from marco_svc.synth.background import Background
from marco_svc.synth.canvas import FULL_SIZE
from marco_svc.synth.marking import GENERATOR, write_note
from marco_svc.synth.render import Drop, render_drop

# A plausible screening plate: mostly clear, some precipitate, a few hits, a couple of failures.
DEMO_MIX: Mapping[str, float] = {
    "clear": 0.62,
    "light precipitate": 0.1,
    "heavy precipitate": 0.07,
    "phase separation": 0.04,
    "micro crystals": 0.03,
    "small crystals": 0.03,
    "medium crystals": 0.02,
    "large crystals": 0.02,
    "needles & plates": 0.03,
    "bad drop": 0.04,
}
DEFAULT_IMAGER = "RI1000-SYNTH"
TRUTH_COLUMNS = (
    "path",
    "well",
    "drop",
    "label",
    "label4",
    "variant",
    "seed",
    "height",
    "width",
    "drop_x",
    "drop_y",
    "drop_radius",
    "crystal_boxes",
    "look",
    "synthetic",
)


@dataclass(frozen=True)
class PlateSpec:
    """What a plate is: barcode, geometry, inspection, and the imager database ids."""

    barcode: str
    geometry: PlateType
    inspected_at: datetime
    imager: str
    plate_id: int
    batch_id: int
    profile_id: int = 1


@dataclass(frozen=True)
class WrittenImage:
    path: Path  # absolute
    well: str
    drop: int
    index: int  # 0-based position on the plate (well-major, then drop)
    render: Drop


@dataclass
class WrittenPlate:
    """What write_plate made: the root, the images and the ground truth."""

    root: Path
    spec: PlateSpec
    layout: str
    images: list[WrittenImage] = field(default_factory=list)
    truth_csv: Path | None = None
    metadata: list[Path] = field(default_factory=list)

    @property
    def image_root(self) -> Path:
        """The smallest folder holding every image (what to ingest)."""
        return Path(os.path.commonpath([img.path.parent for img in self.images]))


class Layout(Protocol):
    name: str

    def path(self, plate: PlateSpec, well: str, drop: int, index: int) -> Path:
        """The image's path relative to the plate root."""
        ...

    def finish(self, root: Path, plate: PlateSpec, images: Sequence[WrittenImage]) -> list[Path]:
        """Write metadata files after the images; returns their paths."""
        ...


@dataclass(frozen=True)
class FormulatrixFlat:
    name: str = "formulatrix-flat"

    def folder(self, plate: PlateSpec) -> str:
        date = plate.inspected_at.strftime("%Y-%m-%d")
        return f"{plate.barcode}_{date}_{plate.imager}-{plate.geometry.drops}drop"

    def path(self, plate: PlateSpec, well: str, drop: int, index: int) -> Path:
        row, column = split_well(well)
        name = f"{plate.barcode}_{column:02d}{chr(ord('A') + row)}_{drop}.jpg"
        return Path(self.folder(plate)) / name

    def finish(self, root: Path, plate: PlateSpec, images: Sequence[WrittenImage]) -> list[Path]:
        return []


ROCK_MAKER_COLUMNS = (
    "BatchID",
    "DateImaged",
    "DropNum",
    "ImagerName",
    "PlateID",
    "ProfileID",
    "WellColNum",
    "WellNum",
    "WellRowLetter",
)


@dataclass(frozen=True)
class RockMakerTree:
    """Rock Maker's own storage tree plus the database rows as `<barcode>.csv`."""

    name: str = "rock-maker"
    kind: str = "ef"  # extended-focus image
    first_region: int = 200_000  # region ids are per image; these are made up

    def path(self, plate: PlateSpec, well: str, drop: int, index: int) -> Path:
        number = plate.geometry.well_number(well)
        return (
            Path("WellImages")
            / str(plate.plate_id % 1000)
            / f"plateID_{plate.plate_id}"
            / f"batchID_{plate.batch_id}"
            / f"wellNum_{number}"
            / f"profileID_{plate.profile_id}"
            / f"d{drop}_r{self.first_region + index}_{self.kind}.jpg"
        )

    def finish(self, root: Path, plate: PlateSpec, images: Sequence[WrittenImage]) -> list[Path]:
        out = root / f"{plate.barcode}.csv"
        with out.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(ROCK_MAKER_COLUMNS)
            for image in images:
                row, column = split_well(image.well)
                writer.writerow(
                    [
                        plate.batch_id,
                        plate.inspected_at.strftime("%Y-%m-%d"),
                        image.drop,
                        plate.imager,
                        plate.plate_id,
                        plate.profile_id,
                        column,
                        plate.geometry.well_number(image.well),
                        chr(ord("A") + row),
                    ]
                )
        return [out]


LAYOUTS: dict[str, Layout] = {}


def register_layout(layout: Layout) -> None:
    """Make a layout available to write_plate (and `marco-svc demo --layout`) by name."""
    LAYOUTS[layout.name] = layout


register_layout(FormulatrixFlat())
register_layout(RockMakerTree())


def layout_named(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown plate layout {name!r} (known: {', '.join(LAYOUTS)})") from None


def normalise_mix(mix: Mapping[str, float] | None) -> dict[str, float]:
    """A class mix over ten-way labels as probabilities; unknown labels are an error."""
    mix = dict(DEMO_MIX if mix is None else mix)
    unknown = set(mix) - set(MERCK10_LABELS)
    if unknown:
        raise ValueError(f"unknown labels in class mix: {', '.join(sorted(unknown))}")
    if any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError("class mix weights must be non-negative and not all zero")
    total = sum(mix.values())
    return {label: mix[label] / total for label in MERCK10_LABELS if mix.get(label, 0) > 0}


def image_seed(seed: int, *keys: int) -> int:
    """A well-spread per-image seed derived from a plate (or dataset) seed."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def write_plate(
    root: str | Path,
    layout: str = "formulatrix-flat",
    barcode: str | None = None,
    wells: int = 96,
    drops: int = 2,
    inspected_at: datetime | None = None,
    seed: int = 0,
    class_mix: Mapping[str, float] | None = None,
    size: Sequence[int] = FULL_SIZE,
    imager: str = DEFAULT_IMAGER,
    plate_id: int | None = None,
    batch_id: int | None = None,
    backgrounds: Sequence[Background] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> WrittenPlate:
    """Render and write one plate inspection; deterministic from `seed`.

    Labels are drawn per drop from `class_mix` (ten-way label -> weight; DEMO_MIX by
    default). Writes the images, the layout's metadata, `<barcode>.truth.csv` with
    the ground truth of every image beside the plate, and SYNTHETIC.txt in the root
    and in every folder that holds images. `backgrounds` (real clear drops) are used
    round-robin when given.
    """
    root = Path(root)
    chosen = layout_named(layout)
    geometry = plate_type(wells, drops)
    rng = np.random.default_rng([seed, 0x9A7E])
    spec = PlateSpec(
        barcode=barcode or f"SYN{seed % 100000:05d}",
        geometry=geometry,
        inspected_at=inspected_at or datetime(2024, 1, 1) + timedelta(days=seed % 365),
        imager=imager,
        plate_id=plate_id if plate_id is not None else int(rng.integers(100, 1000)) + 1000,
        batch_id=batch_id if batch_id is not None else int(rng.integers(1000, 100000)),
    )
    _check_barcode(spec.barcode)
    mix = normalise_mix(class_mix)
    labels = list(mix)
    picks = rng.choice(len(labels), size=geometry.wells * drops, p=list(mix.values()))
    written = WrittenPlate(root=root, spec=spec, layout=chosen.name)
    total = geometry.wells * drops
    for index in range(total):
        well = geometry.well_from_number(index // drops + 1)
        drop_number = index % drops + 1
        label = labels[int(picks[index])]
        backdrop = backgrounds[index % len(backgrounds)] if backgrounds else None
        drop = render_drop(label, image_seed(seed, index), size, backdrop)
        path = root / chosen.path(spec, well, drop_number, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(drop.to_jpeg())
        written.images.append(WrittenImage(path, well, drop_number, index, drop))
        if progress is not None:
            progress(index + 1, total)
    written.metadata = chosen.finish(root, spec, written.images)
    written.truth_csv = write_truth(root / f"{spec.barcode}.truth.csv", root, written.images)
    details = f"plate {spec.barcode}, layout {chosen.name}, seed {seed}, {GENERATOR}"
    for folder in {root, *(img.path.parent for img in written.images)}:
        write_note(folder, details)
    return written


def write_truth(path: Path, root: Path, images: Sequence[WrittenImage]) -> Path:
    """Ground truth of every image, one row each (boxes as JSON, render pixels)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=TRUTH_COLUMNS)
        writer.writeheader()
        for image in images:
            truth = image.render.truth()
            truth["crystal_boxes"] = json.dumps(truth["crystal_boxes"])
            writer.writerow(
                {
                    "path": image.path.relative_to(root).as_posix(),
                    "well": image.well,
                    "drop": image.drop,
                    "synthetic": 1,
                    **truth,
                }
            )
    return path


def _check_barcode(barcode: str) -> None:
    if not barcode or any(c in barcode for c in "_/\\ ") or barcode in (".", ".."):
        raise ValueError(f"barcode {barcode!r} must be non-empty, without '_', '/' or spaces")
