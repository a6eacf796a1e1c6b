"""`marco-svc db`: schema migrations."""

from __future__ import annotations

import click

from marco_svc.cli.common import CliState, pass_state
from marco_svc.db import migrate
from marco_svc.db.session import Database


@click.group("db")
def command() -> None:
    """Create and migrate the database schema."""


def _database(state: CliState) -> Database:
    return Database(state.settings.resolved_database_url)


@command.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@pass_state
def upgrade(state: CliState, revision: str) -> None:
    """Bring the schema up to REVISION (default: the newest)."""
    db = _database(state)
    try:
        migrate.upgrade(db.engine, revision)
        click.echo(f"database at revision {migrate.current_revision(db.engine)}")
    finally:
        db.dispose()


@command.command("downgrade")
@click.argument("revision")
@pass_state
def downgrade(state: CliState, revision: str) -> None:
    """Take the schema back to REVISION ('base' removes every table)."""
    db = _database(state)
    try:
        migrate.downgrade(db.engine, revision)
        click.echo(f"database at revision {migrate.current_revision(db.engine) or 'base'}")
    finally:
        db.dispose()


@command.command("current")
@pass_state
def current(state: CliState) -> None:
    """Print the schema revision of the database and of this code."""
    db = _database(state)
    try:
        click.echo(f"database: {migrate.current_revision(db.engine) or 'empty'}")
        click.echo(f"code:     {migrate.head_revision()}")
    finally:
        db.dispose()
