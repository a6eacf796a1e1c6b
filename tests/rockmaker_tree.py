"""Rebuild the real flat-export plate into Rock Maker's native store, as the imager wrote it."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from tests.conftest import REAL_PLATE, REAL_PLATE_IMAGES

METADATA_CSV = REAL_PLATE / "90j8.csv"


def tree_path(store: Path, plate: int, batch: int, well: int, profile: int, name: str) -> Path:
    return (
        store
        / "WellImages"
        / str(plate % 1000)
        / f"plateID_{plate}"
        / f"batchID_{batch}"
        / f"wellNum_{well}"
        / f"profileID_{profile}"
        / name
    )


def rebuild_native_tree(store: Path, with_csv: bool = True) -> list[Path]:
    """Copy the 96 drop-1 images of plate 90j8 to their native paths; the CSV beside them."""
    written = []
    with METADATA_CSV.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["DropNum"] != "1":
                continue  # only drop 1 images are in ../shared
            source = (
                REAL_PLATE_IMAGES / f"90j8_{int(row['WellColNum']):02d}{row['WellRowLetter']}_1.jpg"
            )
            target = tree_path(
                store,
                int(row["PlateID"]),
                int(row["BatchID"]),
                int(row["WellNum"]),
                int(row["ProfileID"]),
                f"d1_r{7000 + int(row['WellNum'])}_ef.jpg",
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            written.append(target)
    if with_csv:
        shutil.copyfile(METADATA_CSV, store / "90j8.csv")
    return written
