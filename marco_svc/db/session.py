"""Engine and sessions for one database URL (SQLite embedded, or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

SUPPORTED_BACKENDS = ("sqlite", "postgresql")


class DatabaseURLError(ValueError):
    """A database URL that cannot be used."""


def parse_database_url(text: str) -> URL:
    """Validate a URL; plain `postgresql://` means the psycopg 3 driver."""
    try:
        url = make_url(text)
    except ArgumentError:
        raise DatabaseURLError(
            f"malformed database URL {text!r}: expected sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST/DB"
        ) from None
    if url.get_backend_name() not in SUPPORTED_BACKENDS:
        raise DatabaseURLError(
            f"unsupported database {url.get_backend_name()!r} in {text!r} "
            f"(supported: {', '.join(SUPPORTED_BACKENDS)})"
        )
    if url.get_backend_name() == "postgresql" and url.get_driver_name() != "psycopg":
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() == "sqlite" and url.database in (None, ""):
        raise DatabaseURLError(f"database URL {text!r} names no SQLite file")
    return url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url_text: str) -> Engine:
    """An engine with the settings each backend needs for concurrent service use."""
    url = parse_database_url(url_text)
    if url.get_backend_name() == "sqlite":
        if url.database != ":memory:":
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


class Database:
    """One database: its engine and a session factory."""

    def __init__(self, url_text: str) -> None:
        self.engine = make_engine(url_text)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def url(self) -> URL:
        return self.engine.url

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self.sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()
