"""Plate geometry and well naming: 96 / 384 wells, wellNum <-> A1, drops per well."""

from __future__ import annotations

import re
from dataclasses import dataclass

_WELL = re.compile(r"^\s*([A-Pa-p])\s*0*(\d{1,2})\s*$")


class GeometryError(ValueError):
    """A plate type, well or drop that cannot exist."""


@dataclass(frozen=True)
class PlateType:
    """Rows x columns x drops per well, e.g. 96 wells (8 x 12) with 2 drops."""

    rows: int
    columns: int
    drops: int

    @property
    def wells(self) -> int:
        return self.rows * self.columns

    @property
    def name(self) -> str:
        return f"{self.wells}x{self.drops}"

    def check_well(self, well: str) -> str:
        """The canonical well name, or GeometryError if it is not on this plate."""
        row, column = split_well(well)
        if row >= self.rows or column > self.columns:
            raise GeometryError(f"well {well} is not on a {self.wells}-well plate")
        return well_name(row, column)

    def check_drop(self, drop: int) -> int:
        if not 1 <= drop <= self.drops:
            raise GeometryError(f"drop {drop} is not on a plate with {self.drops} drop(s) per well")
        return drop

    def well_from_number(self, number: int) -> str:
        """Well number (1-based, row-major as Rock Maker counts) to its name."""
        if not 1 <= number <= self.wells:
            raise GeometryError(f"well number {number} is not on a {self.wells}-well plate")
        row, column = divmod(number - 1, self.columns)
        return well_name(row, column + 1)

    def well_number(self, well: str) -> int:
        """Well name to its 1-based row-major number."""
        row, column = split_well(self.check_well(well))
        return row * self.columns + column


# Which layouts exist: wells -> (rows, columns, most drops per well).
LAYOUTS: dict[int, tuple[int, int, int]] = {96: (8, 12, 4), 384: (16, 24, 3)}


def plate_type(wells: int, drops: int) -> PlateType:
    """A validated plate type: 96 wells with 1..4 drops or 384 wells with 1..3."""
    if wells not in LAYOUTS:
        raise GeometryError(f"unsupported plate of {wells} wells (supported: 96, 384)")
    rows, columns, most = LAYOUTS[wells]
    if not 1 <= drops <= most:
        raise GeometryError(f"a {wells}-well plate has 1 to {most} drops per well, not {drops}")
    return PlateType(rows, columns, drops)


def parse_plate_type(text: str) -> PlateType:
    """Read '96x2', '384x3' or '96' (one drop)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not match:
        raise GeometryError(f"plate type {text!r} is not like '96x2'")
    return plate_type(int(match.group(1)), int(match.group(2) or 1))


def split_well(well: str) -> tuple[int, int]:
    """'B07' -> (1, 7): zero-based row, one-based column."""
    match = _WELL.match(well)
    if not match:
        raise GeometryError(f"{well!r} is not a well name like A1 or H12")
    column = int(match.group(2))
    if column < 1:
        raise GeometryError(f"{well!r} has no column 0")
    return ord(match.group(1).upper()) - ord("A"), column


def well_name(row: int, column: int) -> str:
    """(1, 7) -> 'B7'."""
    return f"{chr(ord('A') + row)}{column}"


def layout_from_number(number: int, well: str) -> int | None:
    """The plate size (96 / 384) on which row-major well `number` is `well`.

    None when the numbering cannot tell (row A is numbered alike on every plate);
    GeometryError when no supported plate numbers that well so.
    """
    row, column = split_well(well)
    if row == 0 and number == column:
        return None
    for wells, (rows, columns, _) in sorted(LAYOUTS.items()):
        if row < rows and column <= columns and row * columns + column == number:
            return wells
    raise GeometryError(f"well number {number} is not well {well} on any supported plate")


def smallest_layout(well: str) -> int:
    """The number of wells of the smallest plate that has this well."""
    row, column = split_well(well)
    for wells, (rows, columns, _) in sorted(LAYOUTS.items()):
        if row < rows and column <= columns:
            return wells
    raise GeometryError(f"well {well} is on no supported plate")
