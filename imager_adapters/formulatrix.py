"""Formulatrix Rock Imager exports.

Flat export (as xchem/formulatrix_pipe writes it; the real plate in ../shared/data):
    <barcode>_<YYYY-MM-DD>_<imager>-<n>drop/<barcode>_<col><row>_<drop>.jpg
e.g. `90j8_2018-04-11_RI1000-0081-2drop/90j8_01A_1.jpg`: plate 90j8, well A1, drop 1,
imaged 2018-04-11 on RI1000-0081, a 2-drop plate. Column and row letter give the well;
the folder states the drops per well; the number of wells is inferred at ingest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from imager_adapters.record import ImageRecord, Rejection
from imager_adapters.wells import GeometryError, split_well, well_name

_FOLDER = re.compile(
    r"^(?P<barcode>.+)_(?P<date>\d{4}-\d{2}-\d{2})_(?P<imager>.+?)-(?P<drops>\d+)drop$"
)
_FILE = re.compile(
    r"^(?P<barcode>.+)_(?P<col>\d{1,2})(?P<row>[A-Pa-p])_(?P<drop>\d)\.(?:jpe?g|png|tiff?)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class FlatExport:
    """`<barcode>_<date>_<imager>-<n>drop/<barcode>_<col><row>_<drop>.jpg`."""

    name: str = "formulatrix-flat"

    def parse(self, path: Path) -> ImageRecord | Rejection | None:
        folder = _FOLDER.match(path.parent.name)
        file = _FILE.match(path.name)
        if not folder or not file:
            return None
        if folder["barcode"] != file["barcode"]:
            return Rejection(
                path,
                f"barcode {file['barcode']!r} in the file name differs from "
                f"{folder['barcode']!r} in the folder name",
                self.name,
            )
        try:
            imaged = datetime.strptime(folder["date"], "%Y-%m-%d")
            row, column = split_well(f"{file['row']}{file['col']}")
        except (ValueError, GeometryError) as exc:
            return Rejection(path, str(exc), self.name)
        return ImageRecord(
            path=path,
            barcode=folder["barcode"],
            well=well_name(row, column),
            drop=int(file["drop"]),
            inspected_at=imaged,
            imager=folder["imager"],
            imaging_mode="visible",
            plate_drops=int(folder["drops"]),
            adapter=self.name,
        )


FLAT_EXPORT = FlatExport()
