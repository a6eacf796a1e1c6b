"""The ingest core on SQLite and PostgreSQL: idempotent, versioned, failures recorded."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from imager_adapters.record import ImageRecord, Rejection
from marco_svc.db.models import Drop, Image, Inspection, Plate
from marco_svc.file_access import FilePolicy
from marco_svc.ingest import ingest
from marco_svc.runtime import Runtime
from tests.helpers import jpeg_bytes, write_jpeg

WHEN = datetime(2024, 5, 1, 9, 30)


def record(path: Path, well: str = "A1", drop: int = 1, **kw) -> ImageRecord:
    fields = {"barcode": "P1", "inspected_at": WHEN, "imager": "RI-1", "plate_drops": 2}
    return ImageRecord(path=path, well=well, drop=drop, **{**fields, **kw})


def count(runtime: Runtime, model) -> int:
    with runtime.db.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_same_file_twice_is_one_image(runtime: Runtime, tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "a.jpg")
    first = ingest(runtime.db, record(path))
    second = ingest(runtime.db, record(path))
    assert (first.outcome, second.outcome) == ("created", "duplicate")
    assert first.image_id == second.image_id
    assert [count(runtime, m) for m in (Plate, Inspection, Drop, Image)] == [1, 1, 1, 1]


def test_relative_and_absolute_path_are_one_image(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_jpeg(tmp_path / "a.jpg")
    monkeypatch.chdir(tmp_path)
    ingest(runtime.db, record(Path("a.jpg")))
    assert ingest(runtime.db, record(path)).outcome == "duplicate"
    assert count(runtime, Image) == 1


def test_same_path_new_content_is_a_new_version(runtime: Runtime, tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "a.jpg", seed=1)
    first = ingest(runtime.db, record(path))
    path.write_bytes(jpeg_bytes(seed=2))
    second = ingest(runtime.db, record(path))
    assert second.outcome == "created"
    assert (first.version, second.version) == (1, 2)
    with runtime.db.session() as session:
        shas = session.scalars(select(Image.sha256).order_by(Image.version)).all()
    assert len(set(shas)) == 2, "the first version must be kept, not overwritten"


def test_copy_of_a_file_into_the_same_drop_is_not_stored_twice(
    runtime: Runtime, tmp_path: Path
) -> None:
    first = write_jpeg(tmp_path / "one" / "a.jpg", seed=3)
    copy = tmp_path / "two" / "a.jpg"
    copy.parent.mkdir()
    copy.write_bytes(first.read_bytes())
    ingest(runtime.db, record(first))
    assert ingest(runtime.db, record(copy)).outcome == "duplicate"
    assert count(runtime, Image) == 1


def test_drops_wells_and_inspections_share_rows(runtime: Runtime, tmp_path: Path) -> None:
    for seed, (well, drop) in enumerate([("A1", 1), ("A1", 2), ("h12", 1), ("A01", 1)]):
        ingest(runtime.db, record(write_jpeg(tmp_path / f"{seed}.jpg", seed=seed), well, drop))
    later = write_jpeg(tmp_path / "later.jpg", seed=9)
    ingest(runtime.db, record(later, "A1", 1, inspected_at=datetime(2024, 5, 8)))
    with runtime.db.session() as session:
        wells = session.scalars(select(Drop.well).order_by(Drop.id)).all()
        plate = session.scalar(select(Plate))
    assert wells == ["A1", "A1", "H12"]
    assert count(runtime, Inspection) == 2
    assert (plate.wells, plate.drops, plate.wells_inferred) == (96, 2, True)


def test_inferred_plate_grows_to_384_wells(runtime: Runtime, tmp_path: Path) -> None:
    ingest(runtime.db, record(write_jpeg(tmp_path / "a.jpg", seed=1), "A1"))
    result = ingest(runtime.db, record(write_jpeg(tmp_path / "b.jpg", seed=2), "P24"))
    assert result.outcome == "created"
    with runtime.db.session() as session:
        assert session.scalar(select(Plate.wells)) == 384


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"well": "P24", "plate_wells": 96}, "wells"),
        ({"drop": 3}, "drops per well"),
        ({"plate_drops": 5, "drop": 1}, "drops"),
        ({"well": "Q1"}, "not a well name"),
    ],
)
def test_bad_geometry_is_a_recorded_failure(
    runtime: Runtime, tmp_path: Path, kw: dict, reason: str
) -> None:
    path = write_jpeg(tmp_path / "x.jpg")
    fields = {"well": "A1", "drop": 1, **kw}
    result = ingest(runtime.db, record(path, **fields))
    assert result.outcome == "failed"
    assert reason in result.reason
    assert ingest(runtime.db, record(path, **fields)).image_id == result.image_id
    assert count(runtime, Image) == 1
    assert count(runtime, Plate) == 0, "a failed ingest leaves no half-made plate"


def test_conflicting_plate_type_keeps_what_is_stored(runtime: Runtime, tmp_path: Path) -> None:
    good = ingest(runtime.db, record(write_jpeg(tmp_path / "a.jpg", seed=1), plate_wells=96))
    bad = ingest(runtime.db, record(write_jpeg(tmp_path / "b.jpg", seed=2), plate_wells=384))
    assert bad.outcome == "failed" and "conflicting metadata" in bad.reason
    with runtime.db.session() as session:
        assert session.get(Image, good.image_id).status == "new"
        assert session.scalar(select(Plate.wells)) == 96


def test_conflicting_inspection_id_is_recorded(runtime: Runtime, tmp_path: Path) -> None:
    ingest(runtime.db, record(write_jpeg(tmp_path / "a.jpg", seed=1), inspection_id="b1"))
    bad = ingest(runtime.db, record(write_jpeg(tmp_path / "b.jpg", seed=2), inspection_id="b2"))
    assert bad.outcome == "failed" and "'b1'" in bad.reason


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"plain text, not a picture", "not an image"),
        (jpeg_bytes()[:-200], "truncated JPEG"),
    ],
)
def test_bad_files_are_recorded_failures(
    runtime: Runtime, tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    result = ingest(runtime.db, record(path))
    assert result.outcome == "failed" and reason in result.reason
    with runtime.db.session() as session:
        image = session.get(Image, result.image_id)
        assert (image.status, image.drop.well) == ("failed", "A1")
    again = ingest(runtime.db, record(path))  # offered again: retried, fails again
    assert (again.outcome, again.image_id) == ("failed", result.image_id)
    assert again.reason == result.reason
    assert count(runtime, Image) == 1


def test_oversized_image_is_refused(runtime: Runtime, tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "big.jpg", width=400, height=300)
    result = ingest(runtime.db, record(path), FilePolicy(max_pixels=100_000))
    assert result.outcome == "failed" and "exceeds the limit" in result.reason


def test_unreadable_and_rejected_files_are_recorded_once(runtime: Runtime, tmp_path: Path) -> None:
    missing = tmp_path / "gone.jpg"
    first = ingest(runtime.db, record(missing))
    assert first.outcome == "failed" and "unreadable file" in first.reason
    odd = write_jpeg(tmp_path / "odd-name.jpg")
    rejected = ingest(runtime.db, Rejection(odd, "unknown naming scheme"))
    again = ingest(runtime.db, Rejection(odd, "unknown naming scheme"))
    assert rejected.outcome == "failed" and again.image_id == rejected.image_id
    with runtime.db.session() as session:
        image = session.get(Image, rejected.image_id)
        assert image.drop_id is None and image.error == "unknown naming scheme"


def test_a_moved_file_is_followed(runtime: Runtime, tmp_path: Path) -> None:
    first = write_jpeg(tmp_path / "one" / "a.jpg", seed=4)
    stored = ingest(runtime.db, record(first))
    moved = tmp_path / "two" / "a.jpg"
    moved.parent.mkdir()
    first.rename(moved)
    again = ingest(runtime.db, record(moved))
    assert (again.outcome, again.image_id) == ("duplicate", stored.image_id)
    with runtime.db.session() as session:
        assert session.get(Image, stored.image_id).uri == str(moved.resolve())
    assert count(runtime, Image) == 1
