"""The watcher with real watchdog observers on real folders, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from imager_adapters.formulatrix import FLAT_EXPORT
from imager_adapters.record import ImageRecord, Rejection
from marco_svc.config import Settings
from marco_svc.db.models import Drop, Image, Inspection
from marco_svc.file_access import FilePolicy
from marco_svc.runtime import Runtime, open_runtime
from marco_svc.watch import Watcher, WatchError, WatchOptions, watcher_for
from tests.conftest import PG_SERVER, REAL_PLATE_IMAGES, needs_real_plate
from tests.helpers import cli_json, jpeg_bytes, wait_for, write_jpeg
from tests.rockmaker_tree import tree_path

FAST = {
    "watch_settle_seconds": 0.3,
    "watch_rescan_seconds": 0.0,
    "watch_max_wait_seconds": 120.0,
}
WELLS_96 = sorted(f"{row}{col}" for row in "ABCDEFGH" for col in range(1, 13))


def open_fast(settings: Settings, **changes: object) -> Runtime:
    return open_runtime(dataclasses.replace(settings, **{**FAST, **changes}))


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = open_fast(settings)
    yield runtime
    runtime.close()


def statuses(runtime: Runtime) -> Counter[str]:
    with runtime.db.session() as session:
        return Counter(session.scalars(select(Image.status)).all())


def image_count(runtime: Runtime) -> int:
    with runtime.db.session() as session:
        return session.scalar(select(func.count()).select_from(Image))


def uris(runtime: Runtime) -> list[str]:
    with runtime.db.session() as session:
        return sorted(session.scalars(select(Image.uri)).all())


@needs_real_plate
def test_real_plate_copied_into_a_watched_folder(
    rt: Runtime, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    root = tmp_path / "incoming"
    root.mkdir()
    watcher = watcher_for(rt, [root])
    watcher.start()
    try:
        plate = root / REAL_PLATE_IMAGES.name
        plate.mkdir()
        sources = sorted(REAL_PLATE_IMAGES.glob("*.jpg"))
        for n, source in enumerate(sources):
            shutil.copyfile(source, plate / source.name)
            if n == 40:  # a truncated and a zero-byte file among them (drop 2 of A1, B1)
                data = sources[0].read_bytes()
                (plate / "90j8_01A_2.jpg").write_bytes(data[: len(data) // 2])
                (plate / "90j8_01B_2.jpg").write_bytes(b"")
        wait_for(lambda: statuses(rt) == {"new": 96, "failed": 2}, what="96 new + 2 failed")
        assert watcher.alive()
        write_jpeg(plate / "90j8_01C_2.jpg", seed=7)  # the flow goes on after failures
        wait_for(lambda: statuses(rt)["new"] == 97, what="one more image")
        assert watcher.alive()
    finally:
        watcher.stop()
    assert not watcher.alive()

    failed = cli_json("images", "list", "--status", "failed", env=cli_env)
    reasons = {Path(row["path"]).name: row["error"] for row in failed}
    assert reasons.keys() == {"90j8_01A_2.jpg", "90j8_01B_2.jpg"}
    assert reasons["90j8_01A_2.jpg"].startswith("truncated JPEG")
    assert reasons["90j8_01B_2.jpg"] == "empty file (0 bytes)"
    detail = cli_json("plates", "show", "90j8", env=cli_env)
    drop_1 = [i for i in detail["images"] if i["drop"] == 1]
    assert sorted(i["well"] for i in drop_1) == WELLS_96
    assert {(i["status"], i["inspection"]["imager"]) for i in drop_1} == {("new", "RI1000-0081")}
    assert {i["inspection"]["imaged_at"] for i in drop_1} == {"2018-04-11T00:00:00"}
    assert detail["plate_type"] == "96x2"
    queued = rt.scoring_queue.get(timeout=0, max_items=1000)
    assert sorted(queued) == sorted(i["id"] for i in detail["images"] if i["status"] == "new")


def test_files_added_while_stopped_are_picked_up_once(rt: Runtime, tmp_path: Path) -> None:
    root = tmp_path / "in"
    folder = root / "R1_2024-05-01_RI-1-2drop"
    for n, well in enumerate(["01A", "02A", "03A"]):
        write_jpeg(folder / f"R1_{well}_1.jpg", seed=n)
    with watcher_for(rt, [root]) as first:
        wait_for(lambda: image_count(rt) == 3, what="backfill of 3 files")
        assert first.wait_idle(60)
    for n, well in enumerate(["01B", "02B", "03B", "04B"]):
        write_jpeg(folder / f"R1_{well}_1.jpg", seed=10 + n)
    second = watcher_for(rt, [root])
    with second:
        wait_for(lambda: image_count(rt) == 7, what="the 4 files added while stopped")
        assert second.wait_idle(60)
    assert (second.stats["created"], second.stats["skipped"]) == (4, 3)
    assert second.stats["duplicate"] == 0, "stored files are skipped, not read again"
    third = watcher_for(rt, [root])
    with third:
        assert third.wait_idle(60)
    assert (third.stats["created"], third.stats["skipped"]) == (0, 7)
    assert image_count(rt) == 7 and len(set(uris(rt))) == 7


def test_moves_renames_and_recopies(rt: Runtime, tmp_path: Path) -> None:
    root = tmp_path / "in"
    folder = root / "M1_2024-05-01_RI-1-1drop"
    folder.mkdir(parents=True)
    with watcher_for(rt, [root]) as watcher:
        first = write_jpeg(folder / "M1_01A_1.jpg", seed=1)
        wait_for(lambda: image_count(rt) == 1, what="the first file")

        # Moved to another folder of the same naming: same drop, same content, the row follows.
        moved = root / "sorted" / folder.name / first.name
        moved.parent.mkdir(parents=True)
        first.rename(moved)
        wait_for(lambda: uris(rt) == [str(moved.resolve())], what="the image to follow the move")

        # A writer's temp-then-rename: the .part is never read, the final name once.
        part = folder / "M1_02A_1.jpg.part"
        part.write_bytes(jpeg_bytes(seed=2))
        part.rename(folder / "M1_02A_1.jpg")
        wait_for(lambda: image_count(rt) == 2, what="the renamed file")

        # A whole folder staged elsewhere and moved in at once.
        stage = tmp_path / "stage" / "M2_2024-05-02_RI-1-1drop"
        for n in range(5):
            write_jpeg(stage / f"M2_0{n + 1}C_1.jpg", seed=20 + n)
        os.rename(stage, root / stage.name)
        wait_for(lambda: image_count(rt) == 7, what="the moved-in folder")

        # Re-copied content lands in the same drop: a duplicate, no new row.
        copy = root / "again" / folder.name / moved.name
        copy.parent.mkdir(parents=True)
        shutil.copyfile(moved, copy)
        wait_for(lambda: watcher.stats["duplicate"] >= 2, what="the copy to be judged")
        assert watcher.wait_idle(60)
    assert image_count(rt) == 7
    assert watcher.stats["created"] == 7 and watcher.stats["failed"] == 0


def test_bad_files_never_stop_the_flow(settings: Settings, tmp_path: Path) -> None:
    class Picky:
        name = "picky"

        def parse(self, path: Path) -> ImageRecord | Rejection | None:
            if "boom" in path.name:
                raise RuntimeError("adapter bug")
            return None

    runtime = open_fast(settings, max_image_pixels=100_000)
    root = tmp_path / "in"
    folder = root / "B1_2024-05-01_RI-1-1drop"
    folder.mkdir(parents=True)
    options = WatchOptions(settle=0.3, rescan_interval=0, policy=FilePolicy(max_pixels=100_000))
    watcher = Watcher(runtime.db, [root], [Picky(), FLAT_EXPORT], options)
    try:
        watcher.start()
        write_jpeg(folder / "B1_01A_1.jpg", seed=1)
        write_jpeg(folder / "B1_02A_1_boom.jpg", seed=2)  # the adapter raises
        write_jpeg(folder / "holiday.jpg", seed=3)  # no adapter knows the name
        (folder / "B1_03A_1.jpg").write_text("a text file, not an image")
        write_jpeg(folder / "B1_04A_1.jpg", width=400, height=300)  # over the pixel limit
        (folder / "notes.txt").write_text("not an image name: ignored")
        wait_for(lambda: statuses(runtime) == {"new": 1, "failed": 4}, what="1 new, 4 failed")
        assert watcher.alive()
        write_jpeg(folder / "B1_05A_1.jpg", seed=5)
        wait_for(lambda: statuses(runtime)["new"] == 2, what="the next good file")
        with runtime.db.session() as session:
            errors = dict(session.execute(select(Image.uri, Image.error)).all())
    finally:
        watcher.stop()
        runtime.close()
    reasons = {Path(uri).name: error for uri, error in errors.items() if error}
    assert "adapter 'picky' failed: RuntimeError('adapter bug')" in reasons["B1_02A_1_boom.jpg"]
    assert "unknown naming scheme" in reasons["holiday.jpg"]
    assert "not an image" in reasons["B1_03A_1.jpg"]
    assert "exceeds the limit of 100000 pixels" in reasons["B1_04A_1.jpg"]


def rockmaker_csv(store: Path, wells: list[int]) -> None:
    lines = ["BatchID,DateImaged,DropNum,ImagerName,PlateID,ProfileID,WellColNum,WellNum"]
    lines[0] += ",WellRowLetter"
    lines += [f"31,2024-06-01,1,RI1000-0099,1234,1,{w},{w},A" for w in wells]
    (store / "RM77.csv").write_text("\n".join(lines) + "\n")


def test_native_tree_images_wait_for_their_metadata(rt: Runtime, tmp_path: Path) -> None:
    store = tmp_path / "RockMakerStorage"
    for well in (1, 2):
        path = tree_path(store, 1234, 31, well, 1, f"d1_r{well}_ef.jpg")
        write_jpeg(path, seed=well)
    with watcher_for(rt, [store]) as watcher:
        wait_for(lambda: watcher.stats["waits"] >= 2, what="the images to wait")
        assert image_count(rt) == 0, "no failure recorded while the metadata may still come"
        rockmaker_csv(store, [1, 2])
        wait_for(lambda: statuses(rt) == {"new": 2}, what="the images, once the CSV is there")
    with rt.db.session() as session:
        rows = session.execute(
            select(Drop.well, Inspection.external_id, Inspection.imager)
            .select_from(Image)
            .join(Drop, Image.drop_id == Drop.id)
            .join(Inspection, Image.inspection_id == Inspection.id)
        ).all()
    assert sorted(rows) == [("A1", "31", "RI1000-0099"), ("A2", "31", "RI1000-0099")]


def test_metadata_that_never_comes_is_a_recorded_failure(
    settings: Settings, tmp_path: Path
) -> None:
    runtime = open_fast(settings, watch_max_wait_seconds=1.0)
    store = tmp_path / "store"
    write_jpeg(tree_path(store, 4321, 5, 1, 1, "d1_r1_ef.jpg"))
    try:
        with watcher_for(runtime, [store]):
            wait_for(lambda: statuses(runtime) == {"failed": 1}, what="the recorded failure")
        with runtime.db.session() as session:
            error = session.scalar(select(Image.error))
    finally:
        runtime.close()
    assert error == "no Rock Maker metadata for plateID 4321 batchID 5"


def test_polling_observer_for_network_shares(rt: Runtime, tmp_path: Path) -> None:
    root = tmp_path / "share"
    root.mkdir()
    with watcher_for(rt, [root], polling=True) as watcher:
        assert watcher.wait_idle(30)
        for n in range(3):
            write_jpeg(root / "S1_2024-05-01_RI-1-1drop" / f"S1_0{n + 1}A_1.jpg", seed=n)
        wait_for(lambda: image_count(rt) == 3, what="3 polled files")
        assert watcher.alive()


def test_uploads_folder_and_hidden_folders_are_not_watched(rt: Runtime, tmp_path: Path) -> None:
    root = rt.settings.resolved_data_dir  # a careless setup: the data dir inside a watched root
    write_jpeg(root / "uploads" / "ab" / "ab12.jpg")
    write_jpeg(root / ".sync" / "H1_2024-05-01_RI-1-1drop" / "H1_01A_1.jpg")
    write_jpeg(root / "H1_2024-05-01_RI-1-1drop" / "H1_02A_1.jpg", seed=3)
    with watcher_for(rt, [root]) as watcher:
        wait_for(lambda: image_count(rt) == 1, what="the one visible image")
        assert watcher.wait_idle(30)
    assert [Path(uri).name for uri in uris(rt)] == ["H1_02A_1.jpg"]


def test_a_missing_folder_is_a_clear_error(rt: Runtime, tmp_path: Path) -> None:
    with pytest.raises(WatchError, match="not a folder"):
        watcher_for(rt, [tmp_path / "nope"])
    with pytest.raises(WatchError, match="no folder to watch"):
        watcher_for(rt, [])


@pytest.mark.slow
def test_a_burst_of_1152_files_is_ingested_exactly_once(settings: Settings, tmp_path: Path) -> None:
    runtime = open_fast(settings, watch_queue_size=256)  # small: overflow and rescans are fine
    root = tmp_path / "burst"
    folder = root / "BURST_2024-05-01_RI-9-3drop"
    folder.mkdir(parents=True)
    names = [
        f"BURST_{col:02d}{row}_{drop}.jpg"
        for row in "ABCDEFGHIJKLMNOP"
        for col in range(1, 25)
        for drop in (1, 2, 3)
    ]
    try:
        with watcher_for(runtime, [root]) as watcher:
            for seed, name in enumerate(names):
                (folder / name).write_bytes(jpeg_bytes(24, 24, seed=seed))
            wait_for(lambda: image_count(runtime) >= 1152, timeout=600, what="1152 images")
            assert watcher.wait_idle(120)
            assert watcher.alive()
        with runtime.db.session() as session:
            rows = session.execute(select(Image.sha256, Image.drop_id, Image.status)).all()
        queued = runtime.scoring_queue.get(timeout=0, max_items=5000)
    finally:
        runtime.close()
    assert len(rows) == 1152
    assert len({sha for sha, _, _ in rows}) == 1152 and len({d for _, d, _ in rows}) == 1152
    assert {status for _, _, status in rows} == {"new"}
    assert watcher.stats["created"] == 1152 and len(set(queued)) == len(queued) == 1152


@contextmanager
def database_away(database_url: str) -> Iterator[Callable[[], None]]:
    """Refuse and cut connections to the test database; call the result to give it back."""
    if not database_url.startswith("postgresql"):
        pytest.skip("needs a database server to take away")
    name = make_url(database_url).database
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")

    def allow(yes: bool) -> None:
        with admin.connect() as connection:
            connection.execute(
                text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(yes).lower()}')
            )

    allow(False)
    with admin.connect() as connection:
        connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": name},
        )
    try:
        yield lambda: allow(True)
    finally:
        allow(True)
        admin.dispose()


def unavailable(runtime: Runtime) -> bool:
    try:
        image_count(runtime)
    except OperationalError:
        return True
    return False


def test_a_database_outage_delays_a_file_but_loses_nothing(
    rt: Runtime, tmp_path: Path, database_url: str
) -> None:
    root = tmp_path / "in"
    root.mkdir()
    with watcher_for(rt, [root]) as watcher:
        assert watcher.wait_idle(30)
        with database_away(database_url) as give_back:
            write_jpeg(root / "O1_2024-05-01_RI-1-1drop" / "O1_01A_1.jpg")
            wait_for(lambda: watcher.stats["errors"] >= 1, what="a failed store attempt")
            assert watcher.alive() and unavailable(rt)
            give_back()
            wait_for(lambda: image_count(rt) == 1, what="the file, once the database is back")
    assert watcher.stats["created"] == 1


def test_a_backfill_during_an_outage_is_walked_again(
    rt: Runtime, tmp_path: Path, database_url: str
) -> None:
    root = tmp_path / "in"
    write_jpeg(root / "O2_2024-05-01_RI-1-1drop" / "O2_01A_1.jpg")
    with database_away(database_url) as give_back, watcher_for(rt, [root]) as watcher:
        wait_for(lambda: watcher.stats["errors"] >= 1, what="the failed walk")
        give_back()
        wait_for(lambda: image_count(rt) == 1, what="the file, walked again")
        assert watcher.alive()
