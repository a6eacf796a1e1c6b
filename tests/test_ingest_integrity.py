"""Ingest never loses, never leaks (issue 13): one regression test per defect found by an
adversarial run, on SQLite and PostgreSQL where a database is involved."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import stat
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import create_engine, func, insert, select

from imager_adapters.formulatrix import FLAT_EXPORT
from imager_adapters.record import ImageRecord, Rejection
from marco_svc.api import create_app
from marco_svc.config import Settings
from marco_svc.db import migrate
from marco_svc.db.models import Drop, Image, Inspection, Plate
from marco_svc.file_access import FilePolicy
from marco_svc.ingest import ingest
from marco_svc.runtime import Runtime, open_runtime
from marco_svc.service import Service
from marco_svc.watch import Watcher, WatchOptions
from tests.conftest import ROOT
from tests.helpers import api_client, jpeg_bytes, run_cli, wait_for, write_jpeg

TOKEN = "robot-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WHEN = datetime(2024, 5, 1, 9, 30)
PLATE_FOLDER = "90j8_2018-04-11_RI1000-0081-2drop"  # the Formulatrix flat-export naming


def record(path: Path, well: str = "A1", drop: int = 1, **kw: Any) -> ImageRecord:
    fields = {"barcode": "P1", "inspected_at": WHEN, "imager": "RI-1", "plate_drops": 2}
    return ImageRecord(path=path, well=well, drop=drop, **{**fields, **kw})


def count(runtime: Runtime, model: Any, *where: Any) -> int:
    with runtime.db.session() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def image(runtime: Runtime, image_id: int) -> Image:
    with runtime.db.session() as session:
        return session.get(Image, image_id)


@pytest.fixture
def app(settings: Settings) -> Iterator[tuple[Runtime, FlaskClient]]:
    runtime = open_runtime(dataclasses.replace(settings, api_tokens=[TOKEN]))
    yield runtime, api_client(Service(runtime), "admin")  # uploads send the robot TOKEN
    runtime.close()


def upload(client: FlaskClient, barcode: str, files: list[tuple[str, int, bytes]]) -> Any:
    """POST one inspection: files as (well, drop, bytes)."""
    meta = {
        "barcode": barcode,
        "plate_type": "96x2",
        "imaged_at": "2024-05-01T11:30:00+02:00",
        "imager": "robot-1",
        "images": [{"file": f"{w}_{d}.jpg", "well": w, "drop": d} for w, d, _ in files],
    }
    data: dict[str, Any] = {"metadata": json.dumps(meta)}
    for well, drop, content in files:
        data[f"{well}_{drop}.jpg"] = (io.BytesIO(content), f"{well}_{drop}.jpg")
    return client.post("/api/v1/inspections", data=data, headers=AUTH)


# 1. Same bytes under other metadata are another image ----------------------------------


def test_same_bytes_in_another_slot_are_another_image(app: tuple[Runtime, FlaskClient]) -> None:
    runtime, client = app
    same = jpeg_bytes(seed=11)
    first = upload(client, "R1", [("A1", 1, same)]).get_json()["images"][0]
    other = upload(client, "R2", [("A1", 1, same)]).get_json()["images"][0]
    assert (first["outcome"], other["outcome"]) == ("created", "created")
    assert other["image_id"] != first["image_id"]
    assert client.get("/api/v1/plates/R2").status_code == 200
    resent = upload(client, "R2", [("A1", 1, same)]).get_json()["images"][0]
    assert (resent["outcome"], resent["image_id"]) == ("duplicate", other["image_id"])
    assert image(runtime, first["image_id"]).uri == image(runtime, other["image_id"]).uri


def test_a_plate_upload_with_repeated_bytes_keeps_every_drop(
    app: tuple[Runtime, FlaskClient],
) -> None:
    runtime, client = app
    blank = jpeg_bytes(seed=1)  # e.g. two empty wells photographed identically
    files = [
        (f"{row}{col}", 1, blank if col <= 2 else jpeg_bytes(seed=col))
        for row in "AB"
        for col in range(1, 7)
    ]
    body = upload(client, "R3", files).get_json()
    assert body["counts"] == {"created": 12, "duplicate": 0, "failed": 0}
    with runtime.db.session() as session:
        wells = session.scalars(select(Drop.well).join(Image, Image.drop_id == Drop.id)).all()
    assert len(set(wells)) == 12


# 2. Links and non-image files never leak ----------------------------------------------


def _plate_folder(root: Path) -> Path:
    folder = root / PLATE_FOLDER
    folder.mkdir(parents=True)
    return folder


def test_a_link_out_of_the_watched_folder_is_refused_and_never_served(
    app: tuple[Runtime, FlaskClient], tmp_path: Path
) -> None:
    runtime, client = app
    secret = tmp_path / "outside" / "secret.html"
    secret.parent.mkdir()
    secret.write_text("<html><script>alert(1)</script></html>")
    root = tmp_path / "watched"
    link = _plate_folder(root) / "90j8_03B_2.jpg"
    link.symlink_to(secret)
    inside = write_jpeg(root / "elsewhere" / "good.jpg", seed=5)
    (link.parent / "90j8_03C_1.jpg").symlink_to(inside)  # a link inside the root is fine

    watcher = Watcher(runtime.db, [root], [FLAT_EXPORT], WatchOptions(settle=0.2))
    with watcher:
        assert watcher.wait_idle(30)
    with runtime.db.session() as session:
        rows = {Path(i.uri).name: i for i in session.scalars(select(Image))}
    refused = rows["90j8_03B_2.jpg"]
    assert refused.status == "failed" and "outside" in refused.error
    assert refused.uri == str(link), "the link is recorded, not its target"
    assert rows["good.jpg"].status == "new"
    answer = client.get(f"/api/v1/images/{refused.id}/file")
    assert answer.status_code == 404
    assert b"script" not in answer.data


def test_file_serves_only_checked_images_from_allowed_folders(
    app: tuple[Runtime, FlaskClient], tmp_path: Path
) -> None:
    runtime, client = app
    png = io.BytesIO()
    from PIL import Image as PILImage

    PILImage.new("RGB", (32, 24), (10, 200, 30)).save(png, format="PNG")
    named_jpg = tmp_path / "data" / "drops" / "a.jpg"  # a PNG behind a .jpg name
    named_jpg.parent.mkdir(parents=True)
    named_jpg.write_bytes(png.getvalue())
    good = ingest(runtime.db, record(named_jpg))
    assert good.outcome == "created"
    with client.get(f"/api/v1/images/{good.image_id}/file") as answer:
        assert answer.status_code == 200
        assert answer.mimetype == "image/png"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.data == png.getvalue()

    bad = tmp_path / "data" / "drops" / "b.jpg"
    bad.write_text("<html>not an image</html>")
    failed = ingest(runtime.db, record(bad, "A2"))
    assert failed.outcome == "failed"
    assert client.get(f"/api/v1/images/{failed.image_id}/file").status_code == 404

    outside = write_jpeg(tmp_path / "not-a-root" / "c.jpg", seed=3)
    elsewhere = ingest(runtime.db, record(outside, "A3"))
    refusal = client.get(f"/api/v1/images/{elsewhere.image_id}/file")
    assert refusal.status_code == 403
    assert "image_roots" in refusal.get_json()["detail"]

    named_jpg.unlink()  # swapped for a link to a file outside after it was checked
    named_jpg.symlink_to(bad)
    assert client.get(f"/api/v1/images/{good.image_id}/file").status_code in (403, 410)


# 3. Special files never freeze the watcher; a stuck loop is reported ------------------


def test_a_fifo_named_like_an_image_does_not_block_the_watcher(
    runtime: Runtime, tmp_path: Path
) -> None:
    folder = _plate_folder(tmp_path / "watched")
    fifo = folder / "90j8_01A_1.jpg"
    watcher = Watcher(runtime.db, [tmp_path / "watched"], [FLAT_EXPORT], WatchOptions(settle=0.2))
    watcher.start()
    try:
        os.mkfifo(fifo)  # arrives as a new file
        write_jpeg(folder / "90j8_01B_1.jpg", seed=2)
        wait_for(lambda: count(runtime, Image) == 2, timeout=20, what="both files recorded")
    finally:
        with contextlib.suppress(OSError):  # release a reader blocked on the FIFO
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        watcher.stop(timeout=5)
    with runtime.db.session() as session:
        rows = {Path(i.uri).name: i for i in session.scalars(select(Image))}
    assert rows["90j8_01B_1.jpg"].status == "new"
    assert rows["90j8_01A_1.jpg"].status == "failed"
    assert "not a regular file" in rows["90j8_01A_1.jpg"].error


def test_a_stuck_watcher_loop_turns_healthz_to_503(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()

    class Stuck:
        name = "stuck"

        def parse(self, path: Path) -> None:
            release.wait(20)
            return None

    folder = _plate_folder(tmp_path / "watched")
    write_jpeg(folder / "90j8_01A_1.jpg")
    options = WatchOptions(settle=0.1, stall_seconds=0.5)
    watcher = Watcher(runtime.db, [tmp_path / "watched"], [Stuck()], options)
    service = Service(runtime, watcher)
    client = create_app(service).test_client()
    service.start()
    try:
        assert client.get("/healthz").status_code == 200
        answer = wait_for(
            lambda: (a := client.get("/healthz")).status_code == 503 and a,
            timeout=15,
            what="healthz to see the stuck loop",
        )
        assert answer.get_json()["watcher"]["alive"] is False
        assert answer.get_json()["title"] == "Watcher stuck"
    finally:
        release.set()
        service.stop()


# 4. Size is checked before reading; memory stays flat ---------------------------------


def test_a_file_over_max_image_bytes_is_refused_without_reading(
    runtime: Runtime, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(os.urandom(3 * 1024 * 1024))
    result = ingest(runtime.db, record(junk), FilePolicy(max_bytes=1024 * 1024))
    assert result.outcome == "failed"
    assert "max_image_bytes" in result.reason
    assert image(runtime, result.image_id).sha256 == ""


_MEMORY_PROBE = """
import resource, sys
from pathlib import Path
from imager_adapters.record import Rejection
from marco_svc.config import load_settings
from marco_svc.ingest import ingest
from marco_svc.runtime import open_runtime
rt = open_runtime(load_settings(env={}, data_dir=sys.argv[2]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = ingest(rt.db, Rejection(Path(sys.argv[1]), "probe"))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before // 1024, after // 1024, result.outcome, flush=True)
"""


def test_a_two_gigabyte_file_costs_no_memory(tmp_path: Path) -> None:
    junk = tmp_path / "huge.jpg"
    with open(junk, "wb") as out:  # sparse: costs no disk, reads as 2 GiB of zeros
        out.truncate(2 * 1024**3)
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(junk), str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    before_mb, after_mb, outcome = done.stdout.split()
    assert outcome == "failed"
    assert int(after_mb) - int(before_mb) < 50, done.stdout


# 5. Versions are unique under concurrency ---------------------------------------------


def test_concurrent_uploads_to_one_slot_get_versions_1_to_n(
    runtime: Runtime, tmp_path: Path
) -> None:
    paths = [write_jpeg(tmp_path / f"v{n}.jpg", seed=100 + n) for n in range(20)]
    start = threading.Barrier(len(paths))
    outcomes: list[str] = []

    def one(path: Path) -> None:
        start.wait()
        outcomes.append(ingest(runtime.db, record(path)).outcome)

    threads = [threading.Thread(target=one, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outcomes == ["created"] * 20
    with runtime.db.session() as session:
        versions = sorted(session.scalars(select(Image.version)).all())
    assert versions == list(range(1, 21))


def test_the_migration_renumbers_duplicate_versions(database_url: str) -> None:
    if database_url.startswith("postgresql"):
        pytest.importorskip("psycopg")
    engine = create_engine(database_url)
    migrate.downgrade(engine, "base") if migrate.current_revision(engine) else None
    migrate.upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(
            insert(Plate.__table__).values(
                id=1,
                barcode="M1",
                wells=96,
                drops=1,
                wells_inferred=False,
                drops_inferred=False,
                created_at=WHEN,
            )
        )
        connection.execute(
            insert(Inspection.__table__).values(
                id=1, plate_id=1, imaged_at=WHEN, imager="x", created_at=WHEN
            )
        )
        connection.execute(
            insert(Drop.__table__).values(
                id=1, plate_id=1, well="A1", drop_number=1, row_index=0, column_number=1
            )
        )
        for n, version in enumerate([1, 2, 2, 2, 3, 3]):
            connection.execute(
                insert(Image.__table__).values(
                    id=n + 1,
                    inspection_id=1,
                    drop_id=1,
                    uri=f"/x/{n}.jpg",
                    sha256=f"{n:064d}",
                    imaging_mode="visible",
                    version=version,
                    adapter="t",
                    status="new",
                    created_at=WHEN,
                    updated_at=WHEN,
                )
            )
    migrate.upgrade(engine)
    with engine.connect() as connection:
        rows = connection.execute(select(Image.id, Image.version).order_by(Image.id)).all()
    engine.dispose()
    assert [version for _, version in rows] == [1, 2, 3, 4, 5, 6]


# 6. A failure is retried when the file is offered again -------------------------------


def test_a_failed_file_is_retried_when_offered_again(runtime: Runtime, tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "odd-name.jpg", seed=8)
    wrong = ingest(runtime.db, Rejection(path, "no adapter understood the name", "wrong"))
    assert wrong.outcome == "failed"
    again = ingest(runtime.db, Rejection(path, "still no adapter", "wrong"))
    assert (again.outcome, again.reason) == ("failed", "still no adapter")
    right = ingest(runtime.db, record(path, plate_wells=96))
    assert right.outcome == "created"
    assert count(runtime, Image) == 1, "the failed record became the image"
    stored = image(runtime, right.image_id)
    assert (stored.status, stored.error, stored.drop_id is not None) == ("new", None, True)

    conflict = write_jpeg(tmp_path / "conflict.jpg", seed=9)
    first = ingest(runtime.db, record(conflict, "A2", plate_wells=384))
    assert first.outcome == "failed" and "conflicting metadata" in first.reason
    fixed = ingest(runtime.db, record(conflict, "A2", plate_wells=96))
    assert (fixed.outcome, fixed.image_id) == ("created", first.image_id)


def test_images_retry_re_offers_failed_files(cli_env: dict[str, str], tmp_path: Path) -> None:
    folder = _plate_folder(tmp_path / "plate")
    write_jpeg(folder / "90j8_01A_1.jpg", seed=1)
    write_jpeg(folder / "90j8_01B_1.jpg", seed=2)
    wrong = run_cli("ingest", "--adapter", "homebuilt", str(folder), env=cli_env)
    assert "2 failed" in wrong.stdout, wrong.stdout + wrong.stderr
    again = run_cli("ingest", str(folder), env=cli_env)
    assert "2 new" in again.stdout, again.stdout + again.stderr

    write_jpeg(folder / "90j8_01C_1.jpg", seed=3)
    run_cli("ingest", "--adapter", "homebuilt", str(folder / "90j8_01C_1.jpg"), env=cli_env)
    retried = run_cli("images", "retry", "--reason", "naming", env=cli_env)
    assert retried.returncode == 0, retried.stderr
    assert "1 new" in retried.stdout
    listed = json.loads(run_cli("images", "list", "--json", env=cli_env).stdout)
    assert {row["status"] for row in listed} == {"new"} and len(listed) == 3


# 7. Corrupt JPEGs are failures, not scores ---------------------------------------------


def _with_size(data: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its frame header claiming another size."""
    at = data.index(b"\xff\xc0") + 5
    return data[:at] + struct.pack(">HH", height, width) + data[at + 4 :]


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(
            _with_size(jpeg_bytes(256, 192, seed=4), 7000, 8000) + b"\xff\xd9",
            id="7000x8000-header-short-body",
        ),
        pytest.param(jpeg_bytes(256, 192, seed=5)[:1500] + b"\xff\xd9", id="half-with-end-marker"),
    ],
)
def test_a_corrupt_jpeg_with_an_end_marker_is_a_failure(
    runtime: Runtime, tmp_path: Path, corrupt: bytes
) -> None:
    path = tmp_path / "corrupt.jpg"
    path.write_bytes(corrupt)
    result = ingest(runtime.db, record(path))
    assert result.outcome == "failed"
    assert "corrupt" in result.reason.lower() or "premature" in result.reason.lower()


# 8. One permission policy ---------------------------------------------------------------


def test_data_dir_and_files_follow_one_permission_policy(
    app: tuple[Runtime, FlaskClient], settings: Settings
) -> None:
    runtime, client = app
    data = runtime.settings.resolved_data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o750
    if runtime.db.url.get_backend_name() == "sqlite":
        assert stat.S_IMODE(Path(runtime.db.url.database).stat().st_mode) == 0o640
    body = upload(client, "R9", [("A1", 1, jpeg_bytes(seed=21))]).get_json()
    stored = Path(image(runtime, body["images"][0]["image_id"]).uri)
    assert stat.S_IMODE(stored.stat().st_mode) == 0o640
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o750


def test_a_data_group_owns_the_data_dir(settings: Settings, tmp_path: Path) -> None:
    grp = pytest.importorskip("grp")
    if os.geteuid() != 0:
        pytest.skip("changing a folder's group to another one needs root")
    group = grp.getgrnam("daemon")
    changed = dataclasses.replace(settings, data_dir=tmp_path / "grouped", data_group="daemon")
    runtime = open_runtime(changed)
    try:
        info = changed.resolved_data_dir.stat()
        assert info.st_gid == group.gr_gid
        assert stat.S_IMODE(info.st_mode) == 0o750 | stat.S_ISGID
    finally:
        runtime.close()


# 9. `marco-svc ingest` says when files failed ------------------------------------------


def test_ingest_exits_3_when_a_file_failed(cli_env: dict[str, str], tmp_path: Path) -> None:
    folder = _plate_folder(tmp_path / "plate")
    write_jpeg(folder / "90j8_01A_1.jpg", seed=1)
    (folder / "90j8_01B_1.jpg").write_bytes(b"")
    done = run_cli("ingest", str(folder), env=cli_env)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "1 new" in done.stdout and "1 failed" in done.stdout
    clean = run_cli("ingest", str(folder / "90j8_01A_1.jpg"), env=cli_env)
    assert clean.returncode == 0
