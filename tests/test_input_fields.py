"""Barcode, imager, imaging mode and other metadata text are checked wherever they enter:
the validators, the manifest parser (robot upload and sidecars), and ingest of a record
from any adapter (a bad value is a recorded failure, on SQLite and on PostgreSQL)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from imager_adapters.fields import (
    IMAGING_MODES,
    MAX_LENGTH,
    check_barcode,
    check_imager,
    check_imaging_mode,
    check_text,
    escape_controls,
)
from imager_adapters.manifest import ManifestError, manifest_from_csv, parse_manifest
from imager_adapters.record import ImageRecord, Rejection
from imager_adapters.registry import parse_path
from marco_svc.db.models import Drop, Image, Inspection, Plate
from marco_svc.ingest import ingest
from marco_svc.runtime import Runtime
from tests.helpers import write_jpeg

WHEN = datetime(2024, 5, 1, 9, 30)
LONG = "B" * (MAX_LENGTH + 1)

# Barcodes and imager names the tests and the real plate (../shared/data) already use.
GOOD_BARCODES = [
    "90j8",
    "91ab",
    "P1",
    "R1",
    "HB1",
    "CT00123",
    "CT9",
    "plate42",
    "PLATE9",
    "HWI-7",
    "LAB-1",
    "SYNX1",
    "SYN00001",
    "ONEX1",
    "XB1",
    "90j8_2018-04-11_RI1000-0081-2drop",
    "RI1000-0081",
    "A.B:C+D#1 2",
    "B" * MAX_LENGTH,
]
GOOD_IMAGERS = ["", "RI1000-0081", "RI-1", "robot-1", "rig-1", "rig2", "gantry", "Minstrel HT/UV"]
BAD_NAMES = [
    ("<b>x</b>", "the character '<'"),
    ("<script>alert(1)</script>", "the character '<'"),
    ("a\x00b", r"a control character '\x00'"),
    ("a\nb", r"a control character '\n'"),
    ("a\u202eb", "U+202E"),
    ('a"b', "the character '\"'"),
    ("a'b", 'the character "\'"'),
    ("a&b", "the character '&'"),
    ("a`b", "the character '`'"),
    ("a\\b", "the character '\\\\'"),
    ("a;b", "the character ';'"),
    ("a>b", "the character '>'"),
    ("Pl\u0430te", "U+0430"),  # Cyrillic a
    (LONG, "is 129 characters"),
    ("-P1", "starts with '-'"),
    (" P1", "starts with ' '"),
    ("P1 ", "ends with a space"),
]


# -- the validators ------------------------------------------------------------------------


@pytest.mark.parametrize("barcode", GOOD_BARCODES)
def test_good_barcodes_pass_unchanged(barcode: str) -> None:
    assert check_barcode(barcode) == barcode


@pytest.mark.parametrize(("value", "message"), [*BAD_NAMES, ("", "empty"), ("P/1", "'/'")])
def test_bad_barcodes_say_what_is_allowed(value: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_barcode(value)
    text = str(caught.value)
    assert message in text
    assert "a barcode is 1 to 128 characters: ASCII letters, digits and - _ . : + #" in text
    assert "\x00" not in text and "\n" not in text, "the message quotes the value escaped"


@pytest.mark.parametrize("imager", GOOD_IMAGERS)
def test_good_imagers_pass_unchanged(imager: str) -> None:
    assert check_imager(imager) == imager


@pytest.mark.parametrize(("value", "message"), BAD_NAMES)
def test_bad_imagers_say_what_is_allowed(value: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_imager(value)
    assert message in str(caught.value)
    assert "an imager name is 0 to 128 characters" in str(caught.value)


@pytest.mark.parametrize("check", [check_barcode, check_imager, check_imaging_mode, check_text])
@pytest.mark.parametrize("value", [None, 7, b"P1", ["P1"]])
def test_only_text_is_text(check: Any, value: Any) -> None:
    with pytest.raises(ValueError, match="expected text"):
        check(value)


@pytest.mark.parametrize(
    ("value", "mode"),
    [("visible", "visible"), ("UV", "uv"), (" Sonicc ", "sonicc"), ("IR", "ir"), ("uv", "uv")],
)
def test_known_modes_in_any_case(value: str, mode: str) -> None:
    assert check_imaging_mode(value) == mode


def test_the_known_modes_are_the_ones_the_adapters_produce() -> None:
    assert IMAGING_MODES == ("visible", "uv", "sonicc", "ir")
    assert all(check_imaging_mode(mode) == mode for mode in IMAGING_MODES)


@pytest.mark.parametrize("value", ["xray", "", "vis ible", "visible\x00", "<b>uv</b>", LONG])
def test_unknown_modes_list_the_known_ones(value: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_imaging_mode(value)
    assert str(caught.value).startswith("unknown mode ")
    assert str(caught.value).endswith("(known: visible, uv, sonicc, ir)")
    assert "\x00" not in str(caught.value)


@pytest.mark.parametrize("value", ["insp-7", "616", "a b/c <d>", "Prüfung 7", "B" * MAX_LENGTH])
def test_free_text_allows_what_is_not_a_control_character(value: str) -> None:
    assert check_text(value) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a\x00b", r"'\x00' (U+0000)"),
        ("a\tb", r"'\t' (U+0009)"),
        ("a\x7fb", "U+007F"),
        ("a\u2028b", "U+2028"),
        ("a\u200bb", "U+200B"),
        ("a\ud800b", "U+D800"),
        (LONG, "is 129 characters; at most 128"),
    ],
)
def test_free_text_refuses_control_characters(value: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_text(value)
    assert message in str(caught.value)


def test_escape_controls_makes_text_storable() -> None:
    assert escape_controls("plain text, <even> this") == "plain text, <even> this"
    assert escape_controls("a\x00b\x1bc\ud800d\te\nf") == "a\\x00b\\x1bc\\ud800d\te\nf"


# -- the manifest parser (robot upload, sidecars) ------------------------------------------


def manifest(**change: Any) -> dict[str, Any]:
    return {
        "barcode": "R1",
        "imaged_at": "2024-05-01T11:30:00+02:00",
        "imager": "robot-1",
        "plate_type": "96x2",
        "inspection_id": "insp-7",
        "images": [{"file": "a.jpg", "well": "A1", "drop": 1}],
        **change,
    }


def image(**change: Any) -> list[dict[str, Any]]:
    return [{"file": "a.jpg", "well": "A1", "drop": 1, **change}]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"barcode": "<b>x</b>"}, "barcode: '<b>x</b>' has the character '<'"),
        ({"barcode": "a\x00b"}, r"barcode: 'a\x00b' has a control character '\x00'"),
        ({"barcode": LONG}, "barcode: must be 1 to 128 characters"),
        ({"barcode": "P/1"}, "barcode: 'P/1' has the character '/'"),
        ({"imager": "<script>"}, "imager: '<script>' has the character '<'"),
        ({"imager": "rig\x00"}, r"imager: 'rig\x00' has a control character"),
        ({"imager": LONG}, "imager: must be 1 to 128 characters"),
        ({"inspection_id": "i\x00d"}, r"inspection_id: 'i\x00d' has a control or format"),
        ({"inspection_id": "i\u202ed"}, "inspection_id: 'i\\u202ed' has a control or format"),
        ({"plate_type": "96x2\x00"}, r"plate_type: '96x2\x00' has a control or format"),
        ({"imaged_at": "2024-05-01\x00"}, "imaged_at: '2024-05-01\\x00' has a control"),
        (
            {"images": image(imaging_mode="xray")},
            "images[0].imaging_mode: unknown mode 'xray' (known: visible, uv, sonicc, ir)",
        ),
        (
            {"images": image(imaging_mode="uv\x00")},
            r"images[0].imaging_mode: unknown mode 'uv\x00'",
        ),
        ({"images": image(file="a\x00.jpg")}, r"images[0].file: 'a\x00.jpg' has a control"),
        ({"images": image(well="A1\x00")}, r"images[0].well: 'A1\x00' has a control"),
    ],
)
def test_manifest_rejects_bad_text_naming_the_field(change: dict, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(manifest(**change))
    assert message in str(caught.value)
    assert "\x00" not in str(caught.value)


def test_manifest_error_survives_json() -> None:
    """The robot sends JSON; an escaped NUL arrives as a real NUL and is refused."""
    data = json.loads(json.dumps(manifest(barcode="a\x00b")))
    with pytest.raises(ManifestError, match=r"^barcode: 'a\\x00b' has a control character"):
        parse_manifest(data)


def test_manifest_keeps_good_values_and_canonical_modes() -> None:
    images = [
        {"file": "a.jpg", "well": "A1", "imaging_mode": "UV"},
        {"file": "b.jpg", "well": "A1", "imaging_mode": " Visible "},
        {"file": "c.jpg", "well": "A2"},
    ]
    entries = parse_manifest(
        manifest(barcode="90j8", imager="RI1000-0081", inspection_id="616", images=images)
    )
    assert [e.imaging_mode for e in entries] == ["uv", "visible", "visible"]
    assert {(e.barcode, e.imager, e.inspection_id) for e in entries} == {
        ("90j8", "RI1000-0081", "616")
    }


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("a.jpg,<b>x</b>,A1,1,2024-05-02 08:00:00,", "images[0].barcode: '<b>x</b>' has"),
        ("a.jpg,P\x00,A1,1,2024-05-02 08:00:00,", r"images[0].barcode: 'P\x00' has a control"),
        ("a.jpg,P1,A1,1,2024-05-02 08:00:00,xray", "images[0].imaging_mode: unknown mode 'xray'"),
    ],
)
def test_csv_sidecar_rows_are_checked_per_image(row: str, message: str) -> None:
    text = f"file,barcode,well,drop,imaged_at,imaging_mode\n{row}\n"
    with pytest.raises(ManifestError) as caught:
        manifest_from_csv(text)
    assert message in str(caught.value)


def test_a_sidecar_with_markup_is_a_rejection_not_a_record(tmp_path: Path) -> None:
    (tmp_path / "inspection.json").write_text(
        json.dumps(manifest(barcode="<script>alert(1)</script>"))
    )
    answer = parse_path(tmp_path / "a.jpg")
    assert isinstance(answer, Rejection)
    assert "images[0].barcode: '<script>alert(1)</script>' has the character '<'" in answer.reason


# -- ingest of a record from any adapter, on both databases --------------------------------


def record(path: Path, **change: Any) -> ImageRecord:
    fields: dict[str, Any] = {
        "barcode": "P1",
        "well": "A1",
        "drop": 1,
        "inspected_at": WHEN,
        "imager": "RI-1",
        "plate_drops": 2,
        "adapter": "plug-in",
    }
    return ImageRecord(path=path, **{**fields, **change})


def stored(runtime: Runtime) -> dict[str, list[tuple]]:
    """Every stored plate, inspection, drop and image, as plain tuples."""
    columns = {
        Plate: (Plate.id, Plate.barcode, Plate.wells, Plate.drops),
        Inspection: (Inspection.id, Inspection.imager, Inspection.external_id),
        Drop: (Drop.id, Drop.plate_id, Drop.well, Drop.drop_number),
        Image: (Image.id, Image.uri, Image.status, Image.error, Image.imaging_mode),
    }
    with runtime.db.session() as session:
        return {
            model.__name__: [tuple(row) for row in session.execute(select(*cols).order_by(cols[0]))]
            for model, cols in columns.items()
        }


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"barcode": "a\x00b"}, r"invalid metadata: barcode: 'a\x00b' has a control character"),
        ({"barcode": "<b>x</b>"}, "invalid metadata: barcode: '<b>x</b>' has the character '<'"),
        ({"barcode": LONG}, "invalid metadata: barcode: 'BBBB"),
        ({"imager": "rig\x00"}, r"invalid metadata: imager: 'rig\x00' has a control character"),
        (
            {"imaging_mode": "xray"},
            "invalid metadata: imaging_mode: unknown mode 'xray' (known: visible, uv, sonicc, ir)",
        ),
        ({"inspection_id": "b\x00"}, r"invalid metadata: inspection_id: 'b\x00' has a control"),
    ],
)
def test_a_record_with_bad_text_is_a_recorded_failure(
    runtime: Runtime, tmp_path: Path, change: dict, reason: str
) -> None:
    good = ingest(runtime.db, record(write_jpeg(tmp_path / "good.jpg", seed=1)))
    assert good.outcome == "created"
    before = stored(runtime)

    path = write_jpeg(tmp_path / "bad.jpg", seed=2)
    result = ingest(runtime.db, record(path, **change))

    assert result.outcome == "failed"
    assert reason in result.reason and "\x00" not in result.reason
    after = stored(runtime)
    for table in ("Plate", "Inspection", "Drop"):
        assert after[table] == before[table], f"{table} changed"
    *earlier, new = after["Image"]
    assert earlier == before["Image"], "the stored image is untouched"
    assert new[:4] == (result.image_id, str(result.path), "failed", result.reason)
    with runtime.db.session() as session:
        failed = session.get(Image, result.image_id)
        assert (failed.inspection_id, failed.drop_id, failed.adapter) == (None, None, "plug-in")
    again = ingest(runtime.db, record(path, **change))
    assert (again.outcome, again.image_id) == ("failed", result.image_id), "retried, one row"
    assert again.reason == result.reason


def test_the_mode_is_stored_in_its_canonical_spelling(runtime: Runtime, tmp_path: Path) -> None:
    upper = ingest(runtime.db, record(write_jpeg(tmp_path / "a.jpg", seed=1), imaging_mode="UV"))
    lower = ingest(runtime.db, record(write_jpeg(tmp_path / "a.jpg", seed=1), imaging_mode="uv"))
    assert (upper.outcome, lower.outcome) == ("created", "duplicate")
    assert stored(runtime)["Image"][0][4] == "uv"


def test_a_rejection_quoting_a_nul_is_stored_escaped(runtime: Runtime, tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "odd.jpg")
    result = ingest(runtime.db, Rejection(path, "plug-in could not read 'P\x00'", "plug-in"))
    assert (result.outcome, result.reason) == ("failed", "plug-in could not read 'P\\x00'")
    assert stored(runtime)["Image"][0][2:4] == ("failed", result.reason)
