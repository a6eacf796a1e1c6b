"""Schema migrations: create from empty, round trip, refuse a newer database."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import create_engine, inspect, text

from marco_svc.db import migrate
from marco_svc.db.models import Base
from marco_svc.runtime import open_runtime
from tests.conftest import ScratchPostgres
from tests.helpers import run_cli

TABLES = {table.name for table in Base.metadata.sorted_tables}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    scratch: ScratchPostgres = request.getfixturevalue("scratch_postgres")
    return scratch.create()


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_cli_upgrade_downgrade_round_trip(empty_database: str, tmp_path: Path) -> None:
    env = {"MARCO_DATABASE_URL": empty_database, "MARCO_DATA_DIR": str(tmp_path)}
    done = run_cli("db", "upgrade", env=env)
    assert done.returncode == 0, done.stderr
    assert migrate.head_revision() in done.stdout
    assert tables(empty_database) == TABLES
    done = run_cli("db", "downgrade", "base", env=env)
    assert done.returncode == 0, done.stderr
    assert tables(empty_database) == set()
    assert run_cli("db", "upgrade", env=env).returncode == 0
    assert tables(empty_database) == TABLES


def test_models_match_migrations(empty_database: str) -> None:
    """Autogenerate finds nothing to do: the migrations build exactly the models' schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = create_engine(empty_database)
    migrate.upgrade(engine)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert diff == []


def test_newer_database_is_refused_with_a_clear_message(
    empty_database: str, tmp_path: Path
) -> None:
    engine = create_engine(empty_database)
    migrate.upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    engine.dispose()
    env = {"MARCO_DATABASE_URL": empty_database, "MARCO_DATA_DIR": str(tmp_path)}
    done = run_cli("plates", "list", env=env)
    assert done.returncode == 1
    assert "newer than this marco-svc" in done.stderr
    assert "Traceback" not in done.stderr
    with pytest.raises(migrate.SchemaError):
        open_runtime_for(empty_database, tmp_path)


def open_runtime_for(url: str, tmp_path: Path):
    from marco_svc.config import load_settings

    return open_runtime(load_settings(env={}, data_dir=tmp_path, database_url=url))


def test_service_start_upgrades_an_empty_database(empty_database: str, tmp_path: Path) -> None:
    runtime = open_runtime_for(empty_database, tmp_path)
    runtime.close()
    assert tables(empty_database) == TABLES


def test_without_auto_upgrade_an_old_schema_is_refused(empty_database: str, tmp_path: Path) -> None:
    from marco_svc.config import load_settings

    settings = load_settings(
        env={}, data_dir=tmp_path, database_url=empty_database, auto_upgrade=False
    )
    with pytest.raises(migrate.SchemaError, match="marco-svc db upgrade"):
        open_runtime(settings)


def test_edge_images_are_backfilled_from_the_remembered_edge_results(empty_database: str) -> None:
    """0004: each edge image still on its imager PC gets the scope of the first token
    that sent its result; a stored file or an image without a result gets no row."""
    engine = create_engine(empty_database)
    migrate.upgrade(engine, "0003")
    images = sa.table(
        "images", *(sa.column(name) for name in ("id", "uri", "sha256", "imaging_mode")),
        *(sa.column(name) for name in ("version", "adapter", "status", "created_at")),
        sa.column("updated_at"),
    )  # fmt: skip
    uploads = sa.table(
        "uploads", *(sa.column(name) for name in ("scope", "idempotency_key", "kind")),
        sa.column("request_sha256"), sa.column("status_code"), sa.column("created_at"),
        sa.column("response", sa.JSON),
    )  # fmt: skip
    now = datetime(2026, 12, 5)
    uris = {1: "edge://RI-1/D:/a.jpg", 2: "/data/uploads/b.jpg", 3: "edge://RI-1/D:/c.jpg"}
    sent = [("token:1", 1), ("token:2", 1), ("token:1", 2), ("token:3", None)]
    with engine.begin() as connection:
        connection.execute(
            images.insert(),
            [
                {"id": i, "uri": uri, "sha256": "", "imaging_mode": "visible", "version": 1,
                 "adapter": "edge", "status": "scored", "created_at": now, "updated_at": now}
                for i, uri in uris.items()
            ],
        )  # fmt: skip
        connection.execute(
            uploads.insert(),
            [
                {"scope": scope, "idempotency_key": f"k{n}", "kind": "edge-result",
                 "request_sha256": "", "status_code": 200, "created_at": now,
                 "response": {"outcome": "stored", "image_id": image_id}}
                for n, (scope, image_id) in enumerate(sent)
            ],
        )  # fmt: skip
    migrate.upgrade(engine)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT image_id, remote_uri, scope, wanted_at FROM edge_images")
        )
        assert [tuple(row) for row in rows] == [(1, uris[1], "token:1", None)]
    engine.dispose()
