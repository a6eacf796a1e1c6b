"""Shared fixtures: a database on SQLite and on the real PostgreSQL, a runtime, the real plate."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from marco_svc.config import Settings, load_settings
from marco_svc.db import migrate
from marco_svc.db.models import Base
from marco_svc.runtime import Runtime, open_runtime

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MARCO_SHARED", ROOT.parent / "shared"))
REAL_PLATE = SHARED / "data" / "formulatrix_90j8"
REAL_PLATE_IMAGES = REAL_PLATE / "90j8_2018-04-11_RI1000-0081-2drop"
MARCO_GRAPH = SHARED / "marco_graph"
PG_SERVER = os.environ.get("MARCO_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")


def needs_shared(path: Path) -> pytest.MarkDecorator:
    """Skip (cleanly) when ../shared is absent, as in a user's fresh clone."""
    return pytest.mark.skipif(not path.exists(), reason=f"{path} is absent")


needs_real_plate = needs_shared(REAL_PLATE_IMAGES)


class ScratchPostgres:
    """Creates and drops throw-away databases on the real server."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
        self.created: list[str] = []

    def create(self) -> str:
        name = f"marco_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return f"{self.server}/{name}"

    def drop_all(self) -> None:
        with self.admin.connect() as connection:
            for name in self.created:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def scratch_postgres() -> Iterator[ScratchPostgres]:
    scratch = ScratchPostgres(PG_SERVER)
    try:
        with scratch.admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at {PG_SERVER} is not reachable ({exc}); .ci/run starts it")
    yield scratch
    scratch.drop_all()


@pytest.fixture(scope="session")
def postgres_url(scratch_postgres: ScratchPostgres) -> str:
    """One migrated scratch database for the session; tests empty it before use."""
    url = scratch_postgres.create()
    engine = create_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


def _empty_tables(url: str) -> None:
    engine = create_engine(url)
    names = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on an embedded SQLite file and on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'marco.sqlite3'}"
    url = request.getfixturevalue("postgres_url")
    _empty_tables(url)
    return url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return load_settings(env={}, data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = open_runtime(settings)
    yield rt
    rt.close()


@pytest.fixture
def cli_env(settings: Settings) -> dict[str, str]:
    """Environment for running `marco-svc` against the test database."""
    return {
        "MARCO_DATA_DIR": str(settings.resolved_data_dir),
        "MARCO_DATABASE_URL": settings.resolved_database_url,
        "MARCO_CONFIG": "",
    }


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random-weight network (Keras and TFLite fp32) for tests that score."""
    from tests.nets_helpers import write_model_folder

    folder = tmp_path_factory.mktemp("tiny-model") / "1"
    write_model_folder(folder, "resnet-32", "tiny", "1", tflite=True)
    return folder
