"""Plate geometry: well names and numbers both ways, supported layouts."""

from __future__ import annotations

import pytest

from imager_adapters.wells import (
    GeometryError,
    layout_from_number,
    parse_plate_type,
    plate_type,
    split_well,
)


@pytest.mark.parametrize(("wells", "last"), [(96, "H12"), (384, "P24")])
def test_well_numbers_round_trip(wells: int, last: str) -> None:
    plate = plate_type(wells, 1)
    names = [plate.well_from_number(n) for n in range(1, wells + 1)]
    assert names[0] == "A1" and names[1] == "A2" and names[-1] == last
    assert len(set(names)) == wells
    assert [plate.well_number(name) for name in names] == list(range(1, wells + 1))


def test_well_names_are_canonical() -> None:
    assert split_well("b07") == (1, 7)
    assert plate_type(96, 2).check_well("h012") == "H12"


@pytest.mark.parametrize("text", ["96x5", "384x4", "48x1", "96xx"])
def test_unsupported_plate_types(text: str) -> None:
    with pytest.raises(GeometryError):
        parse_plate_type(text)


def test_supported_plate_types() -> None:
    assert parse_plate_type("96x4").name == "96x4"
    assert parse_plate_type("384x3").wells == 384
    assert parse_plate_type("96").drops == 1


@pytest.mark.parametrize(("wells", "well"), [(96, "I1"), (96, "A13"), (384, "Q1")])
def test_wells_off_the_plate(wells: int, well: str) -> None:
    with pytest.raises(GeometryError):
        plate_type(wells, 1).check_well(well)
    with pytest.raises(GeometryError):
        plate_type(wells, 1).well_from_number(wells + 1)


@pytest.mark.parametrize(
    ("number", "well", "wells"),
    [(13, "B1", 96), (25, "B1", 384), (96, "H12", 96), (384, "P24", 384), (7, "A7", None)],
)
def test_plate_size_from_well_numbering(number: int, well: str, wells: int | None) -> None:
    assert layout_from_number(number, well) == wells


@pytest.mark.parametrize(("number", "well"), [(14, "B1"), (2, "A1"), (97, "I1")])
def test_numbering_that_fits_no_plate(number: int, well: str) -> None:
    with pytest.raises(GeometryError):
        layout_from_number(number, well)
