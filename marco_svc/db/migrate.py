"""Alembic migrations, driven from code: upgrade, downgrade, and a schema-version check."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).with_name("migrations")


class SchemaError(RuntimeError):
    """The database schema does not match this version of marco-svc."""


def _config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    """The newest schema revision this code knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    return {rev.revision for rev in ScriptDirectory.from_config(_config()).walk_revisions()}


def current_revision(engine: Engine) -> str | None:
    """The database's schema revision, or None for an empty database."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def check_not_newer(engine: Engine) -> str | None:
    """Raise SchemaError when the database was migrated by a newer marco-svc."""
    current = current_revision(engine)
    if current is not None and current not in known_revisions():
        raise SchemaError(
            f"the database schema (revision {current}) is newer than this marco-svc "
            f"(which knows up to {head_revision()}); upgrade marco-svc"
        )
    return current


def upgrade(engine: Engine, revision: str = "head") -> None:
    check_not_newer(engine)
    command.upgrade(_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    check_not_newer(engine)
    command.downgrade(_config(engine), revision)


def require_current(engine: Engine) -> None:
    """Raise SchemaError unless the database is at the head revision."""
    current = check_not_newer(engine)
    if current != head_revision():
        raise SchemaError(
            f"the database schema is at {current or 'nothing'}, not {head_revision()}; "
            "run `marco-svc db upgrade`"
        )
