"""Imager adapters as pure functions: Rock Maker tree, patterns, sidecars, manifests, registry."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from imager_adapters.manifest import ManifestError, parse_manifest
from imager_adapters.pattern import PatternError, pattern_adapter
from imager_adapters.record import ImageRecord, Rejection
from imager_adapters.registry import adapter_named, configured_adapters, parse_path
from imager_adapters.rockmaker import MetadataError, RockMakerTree
from tests.conftest import needs_real_plate
from tests.rockmaker_tree import METADATA_CSV, rebuild_native_tree, tree_path

WELLS_96 = [f"{row}{col}" for row in "ABCDEFGH" for col in range(1, 13)]
HEADER = "BatchID,DateImaged,DropNum,ImagerName,PlateID,ProfileID,WellColNum,WellNum,WellRowLetter"


def write_csv(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def image(store: Path, plate=692, batch=616, well=1, profile=1, name="d1_r1_ef.jpg") -> Path:
    path = tree_path(store, plate, batch, well, profile, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not read by adapters")
    return path


# -- Rock Maker native tree ----------------------------------------------------------------


@needs_real_plate
@pytest.mark.parametrize("metadata", ["sidecar", "configured"])
def test_native_tree_of_the_real_plate(tmp_path: Path, metadata: str) -> None:
    store = tmp_path / "RockMakerStorage"
    paths = rebuild_native_tree(store, with_csv=metadata == "sidecar")
    adapter = RockMakerTree([] if metadata == "sidecar" else [METADATA_CSV])
    records = [adapter.parse(path) for path in paths]
    assert all(isinstance(r, ImageRecord) for r in records), records[:3]
    assert {(r.barcode, r.imager, r.inspected_at) for r in records} == {
        ("90j8", "RI1000-0081", datetime(2018, 4, 11))
    }
    assert sorted(r.well for r in records) == sorted(WELLS_96)
    assert {r.drop for r in records} == {1}
    assert {(r.plate_wells, r.plate_drops, r.inspection_id) for r in records} == {(96, 2, "616")}
    assert {r.imaging_mode for r in records} == {"visible"}


def test_well_names_come_from_the_metadata_and_agree_with_well_numbers(tmp_path: Path) -> None:
    write_csv(
        tmp_path / "P7.csv",
        ["5,2024-05-01,1,RI-1,1005,3,1,25,B", "5,2024-05-01,2,RI-1,1005,3,24,384,P"],
    )
    adapter = RockMakerTree()
    b1 = adapter.parse(image(tmp_path, plate=1005, batch=5, well=25, profile=3))
    p24 = adapter.parse(image(tmp_path, 1005, 5, 384, 3, "d2_r9_ef.jpg"))
    assert (b1.barcode, b1.well, b1.plate_wells, b1.plate_drops) == ("P7", "B1", 384, 2)
    assert p24.well == "P24" and p24.drop == 2


def test_well_from_number_when_the_export_has_no_letters(tmp_path: Path) -> None:
    header = "Barcode,PlateType,BatchID,DateImaged,DropNum,ImagerName,PlateID,WellNum"
    write_csv(tmp_path / "x.csv", ["XB1,96x3,9,2024-05-01 10:00:00,3,RI-2,77,13"], header)
    record = RockMakerTree().parse(image(tmp_path, 77, 9, 13, 1, "d3_r1_ef.jpg"))
    assert (record.barcode, record.well, record.drop) == ("XB1", "B1", 3)
    assert (record.plate_wells, record.plate_drops) == (96, 3)
    assert record.inspected_at == datetime(2024, 5, 1, 10, 0)


@pytest.mark.parametrize(
    ("where", "reason", "transient"),
    [
        ({"batch": 617}, "no Rock Maker metadata for plateID 692 batchID 617", True),
        ({"plate": 1692}, "no Rock Maker metadata for plateID 1692 batchID 616", True),
        ({"well": 3}, "no Rock Maker metadata for plateID 692 batchID 616 wellNum 3", False),
        ({"name": "d2_r1_ef.jpg"}, "wellNum 1 has no drop 2", False),
        ({"name": "d1_r1_th.jpg"}, "Rock Maker image kind 'th' is not ingested", False),
        ({"name": "thumbs.jpg"}, "is not a Rock Maker image name", False),
    ],
)
def test_tree_rejections_say_why(tmp_path: Path, where: dict, reason: str, transient: bool) -> None:
    write_csv(tmp_path / "90j8.csv", ["616,2018-04-11,1,RI1000-0081,692,1,1,1,A"])
    answer = RockMakerTree().parse(image(tmp_path, **where))
    assert isinstance(answer, Rejection)
    assert reason in answer.reason and answer.transient is transient


def test_folder_must_be_plate_id_mod_1000(tmp_path: Path) -> None:
    path = tmp_path / "WellImages/5/plateID_692/batchID_1/wellNum_1/profileID_1/d1_r1_ef.jpg"
    answer = RockMakerTree().parse(path)
    assert isinstance(answer, Rejection) and "not plateID 692 mod 1000" in answer.reason


def test_metadata_written_later_is_picked_up(tmp_path: Path) -> None:
    adapter = RockMakerTree(refresh_seconds=0)
    path = image(tmp_path)
    assert adapter.parse(path).transient
    write_csv(tmp_path / "90j8.csv", ["616,2018-04-11,1,RI1000-0081,692,1,1,1,A"])
    assert adapter.parse(path).well == "A1"


def test_conflicting_and_unusable_metadata(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", ["616,2018-04-11,1,RI-1,692,1,1,1,A"])
    write_csv(tmp_path / "b.csv", ["616,2018-04-12,1,RI-1,692,1,2,2,A"])
    answer = RockMakerTree().parse(image(tmp_path))
    assert isinstance(answer, Rejection) and "conflicting Rock Maker metadata" in answer.reason
    bad = write_csv(tmp_path / "c" / "bad.csv", ["x"], header="PlateID,Nonsense")
    other = RockMakerTree([bad]).parse(image(tmp_path, plate=693, batch=1))
    assert "bad.csv: no column BatchID" in other.reason


def test_missing_configured_metadata_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="no such file or folder"):
        RockMakerTree([tmp_path / "nope.csv"])


def test_numbering_that_fits_no_plate_is_reported(tmp_path: Path) -> None:
    write_csv(tmp_path / "z.csv", ["1,2024-01-01,1,R,50,1,1,14,B"])
    answer = RockMakerTree().parse(image(tmp_path, plate=50, batch=1, well=14))
    assert isinstance(answer, Rejection)
    assert "well number 14 is not well B1" in answer.reason


# -- patterns and presets ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            "exports/CT00123/20240501_093000/CT00123_B07_2_vis.jpg",
            ("rigaku-crystaltrak", "CT00123", "B7", 2, datetime(2024, 5, 1, 9, 30), "visible"),
        ),
        (
            "CT9/20240501_093000/CT9_H12_1_uv.PNG",
            ("rigaku-crystaltrak", "CT9", "H12", 1, datetime(2024, 5, 1, 9, 30), "uv"),
        ),
        (
            "rig/plate42/2024-05-01_09-30-00/B7_d2.jpg",
            ("homebuilt", "plate42", "B7", 2, datetime(2024, 5, 1, 9, 30), "visible"),
        ),
        (
            "plate42/2024-05-01_09-30-00/p24_d3_uv.tif",
            ("homebuilt", "plate42", "P24", 3, datetime(2024, 5, 1, 9, 30), "uv"),
        ),
    ],
)
def test_presets(path: str, expected: tuple) -> None:
    record = parse_path(Path(path))
    assert isinstance(record, ImageRecord), record
    got = (record.adapter, record.barcode, record.well, record.drop)
    assert (*got, record.inspected_at, record.imaging_mode) == expected


def test_rigaku_file_must_repeat_the_barcode_folder() -> None:
    answer = parse_path(Path("CT1/20240501_093000/CT2_A1_1.jpg"))
    assert isinstance(answer, Rejection) and "unknown naming scheme" in answer.reason


def test_custom_pattern_with_row_column_timezone_and_imager() -> None:
    adapter = pattern_adapter(
        {
            "name": "lab-rig",
            "regex": r"(?P<imager>rig\d)/(?P<barcode>\w+)-(?P<row>[A-H])(?P<column>\d+)"
            r"-(?P<date>\d{8})-(?P<clock>\d{4})\.jpg$",
            "time_format": "%Y%m%d %H%M",
            "timezone": "Europe/Berlin",
            "plate_type": "96x1",
        }
    )
    record = adapter.parse(Path("/data/rig2/PLATE9-C11-20240105-1030.jpg"))
    assert (record.imager, record.barcode, record.well, record.drop) == ("rig2", "PLATE9", "C11", 1)
    assert record.inspected_at.astimezone(UTC) == datetime(2024, 1, 5, 9, 30, tzinfo=UTC)
    assert (record.plate_wells, record.plate_drops) == (96, 1)
    off_plate = adapter.parse(Path("rig1/P-H13-20240105-1030.jpg"))
    assert isinstance(off_plate, Rejection) and "not on a 96-well plate" in off_plate.reason


def test_pattern_with_well_numbers_and_bad_times() -> None:
    adapter = pattern_adapter(
        json.dumps(
            {
                "name": "numbered",
                "regex": r"(?P<barcode>\w+)_w(?P<well_number>\d+)_(?P<time>[^_]+)\.jpg$",
                "plate_type": "384x2",
            }
        )
    )
    assert adapter.parse(Path("X1_w25_2024-05-01T08:00:00.jpg")).well == "B1"
    bad = adapter.parse(Path("X1_w25_yesterday.jpg"))
    assert isinstance(bad, Rejection) and "does not match ISO 8601" in bad.reason
    assert adapter.parse(Path("unrelated.jpg")) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no-such-preset", "no imager pattern preset 'no-such-preset'"),
        ({"name": "x", "regex": "(?P<barcode>a"}, "missing )"),
        ({"name": "x", "regex": r"(?P<barcode>\w+)"}, "needs named groups for well"),
        ({"name": "x", "regex": "a", "colour": 1}, "unknown key 'colour'"),
        ({"regex": "a"}, "give it a name"),
        ("{not json", "not JSON"),
        ({"name": "x", "time_format": "%Y"}, "needs a regex or a glob"),
    ],
)
def test_bad_pattern_specs_are_clear_errors(spec: object, message: str) -> None:
    with pytest.raises(PatternError) as caught:
        pattern_adapter(spec)  # type: ignore[arg-type]
    assert message in str(caught.value)


# -- sidecars and manifests ----------------------------------------------------------------


def sidecar_json(folder: Path, **top: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "barcode": "HB1",
        "imaged_at": "2024-05-01T09:30:00+02:00",
        "imager": "rig-1",
        "plate_type": "96x2",
        "images": [{"file": "a.jpg", "well": "B7", "drop": 2}, {"file": "b.jpg", "well": "A1"}],
        **top,
    }
    path = folder / "inspection.json"
    path.write_text(json.dumps(manifest))
    return path


def test_json_sidecar(tmp_path: Path) -> None:
    sidecar_json(tmp_path / "run1")
    record = parse_path(tmp_path / "run1" / "a.jpg")
    assert (record.adapter, record.barcode, record.well, record.drop) == ("sidecar", "HB1", "B7", 2)
    assert record.inspected_at.astimezone(UTC) == datetime(2024, 5, 1, 7, 30, tzinfo=UTC)
    assert (record.plate_wells, record.plate_drops, record.imager) == (96, 2, "rig-1")
    unlisted = parse_path(tmp_path / "run1" / "c.jpg")
    assert isinstance(unlisted, Rejection) and unlisted.transient
    assert "c.jpg is not listed in" in unlisted.reason


def test_csv_sidecar(tmp_path: Path) -> None:
    folder = tmp_path / "run2"
    folder.mkdir()
    (folder / "inspection.csv").write_text(
        "file,barcode,well,drop,imaged_at,imaging_mode\n"
        "x.jpg,HB2,C3,1,2024-05-02 08:00:00,uv\n"
        "y.jpg,HB2,C4,,2024-05-02 08:00:00,\n"
    )
    x, y = parse_path(folder / "x.jpg"), parse_path(folder / "y.jpg")
    assert (x.barcode, x.well, x.imaging_mode) == ("HB2", "C3", "uv")
    assert (y.well, y.drop, y.imaging_mode) == ("C4", 1, "visible")


def test_builtin_sidecar_only_claims_folders_with_a_sidecar(tmp_path: Path) -> None:
    answer = parse_path(tmp_path / "lonely.jpg")
    assert isinstance(answer, Rejection) and "unknown naming scheme" in answer.reason
    configured = pattern_adapter({"name": "robot", "glob": "*.jpg"})
    waiting = configured.parse(tmp_path / "lonely.jpg")
    assert isinstance(waiting, Rejection) and waiting.transient and "no sidecar" in waiting.reason


def test_bad_sidecar_is_a_transient_rejection(tmp_path: Path) -> None:
    folder = tmp_path / "run3"
    folder.mkdir()
    (folder / "inspection.json").write_text('{"barcode": "half-writ')
    answer = parse_path(folder / "a.jpg")
    assert isinstance(answer, Rejection) and answer.transient and "not JSON" in answer.reason


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"imaged": "2024"}, "unknown field 'imaged'"),
        ({"barcode": ""}, "barcode: required"),
        ({"imaged_at": "tuesday"}, "not an ISO 8601 time"),
        ({"plate_type": "96x9"}, "plate_type: a 96-well plate has 1 to 4 drops"),
        ({"images": []}, "images: expected a non-empty list"),
        ({"images": [{"file": "a", "well": "Z1"}]}, "images[0]: 'Z1' is not a well name"),
        ({"images": [{"file": "a", "well": "A1", "drop": 3}]}, "drop 3 is not on a plate"),
        ({"images": [{"file": "a", "well": "A1", "drop": True}]}, "expected a drop number"),
        (
            {"images": [{"file": "a", "well": "A1"}, {"file": "a", "well": "A2"}]},
            "images[1].file: 'a' is also images[0]",
        ),
        (
            {"images": [{"file": "a", "well": "A1"}, {"file": "b", "well": "a01"}]},
            "well A1 drop 1 (visible) is also images[0]",
        ),
    ],
)
def test_manifest_errors_say_where(change: dict, message: str) -> None:
    manifest = {
        "barcode": "P",
        "imaged_at": "2024-05-01T00:00:00",
        "plate_type": "96x2",
        "images": [{"file": "a", "well": "A1"}],
        **change,
    }
    with pytest.raises(ManifestError) as caught:
        parse_manifest(manifest)
    assert message in str(caught.value)


# -- registry ------------------------------------------------------------------------------


class Exploding:
    name = "exploding"

    def parse(self, path: Path) -> ImageRecord | Rejection | None:
        raise RuntimeError("plug-in bug")


def test_an_adapter_that_raises_becomes_a_rejection() -> None:
    answer = parse_path(Path("x.jpg"), [Exploding()])
    assert isinstance(answer, Rejection)
    assert answer.reason == "imager adapter 'exploding' failed: RuntimeError('plug-in bug')"


def test_configured_adapters_come_first_and_shadow_by_name(tmp_path: Path) -> None:
    csv_file = write_csv(tmp_path / "m" / "90j8.csv", ["616,2018-04-11,1,RI-9,692,1,1,1,A"])
    spec = json.dumps({"preset": "homebuilt", "name": "ours", "imager": "gantry"})
    found = configured_adapters([str(csv_file)], [spec])
    names = [a.name for a in found]
    assert names[:3] == ["ours", "formulatrix-flat", "rockmaker-tree"]
    assert adapter_named("ours", found).parse(Path("P/2024-05-01_09-30-00/A1_d1.jpg")).imager == (
        "gantry"
    )
    tree = adapter_named("rockmaker-tree", found)
    assert tree.parse(image(tmp_path / "elsewhere")).imager == "RI-9"
    with pytest.raises(KeyError, match="no imager adapter named 'nope'"):
        adapter_named("nope", found)
    with pytest.raises(ValueError, match="two imager adapters named 'x'"):
        configured_adapters([], ['{"name": "x", "glob": "*"}', '{"name": "x", "glob": "*"}'])


def test_the_readme_pattern_example_works(tmp_path: Path) -> None:
    from marco_svc.config import load_settings
    from tests.helpers import ROOT

    readme = (ROOT / "README.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "marco.toml"
    config.write_text(example)
    found = configured_adapters([], load_settings(config, env={}).imager_patterns)
    assert [a.name for a in found[:3]] == ["minstrel-2", "lab-rig", "robot-drop"]
    record = adapter_named("lab-rig", found).parse(Path("P9/C11_20240105_1030.jpg"))
    assert (record.barcode, record.well, record.inspected_at) == (
        "P9",
        "C11",
        datetime(2024, 1, 5, 10, 30),
    )
    minstrel = adapter_named("minstrel-2", found).parse(Path("C1/20240501_093000/C1_A1_1.jpg"))
    assert minstrel.imager == "Minstrel-HT-2"
    assert minstrel.inspected_at.astimezone(UTC) == datetime(2024, 5, 1, 8, 30, tzinfo=UTC)
