"""`marco-svc images`: stored images, by status."""

from __future__ import annotations

import click

from marco_svc import queries
from marco_svc.cli.common import CliState, echo_json, json_option, pass_state
from marco_svc.db.models import IMAGE_STATUSES


@click.group("images")
def command() -> None:
    """List stored images."""


@command.command("list")
@click.option("--status", type=click.Choice(IMAGE_STATUSES), help="Only images in this state.")
@click.option("--limit", type=int, default=None, help="At most this many.")
@json_option
@pass_state
def list_images(state: CliState, status: str | None, limit: int | None, as_json: bool) -> None:
    """Images with plate, well, drop, status, error and latest score."""
    with state.runtime().db.session() as session:
        rows = queries.list_images(session, status, limit)
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        where = f"{row['barcode']} {row['well']} d{row['drop']}" if row["well"] else "-"
        tail = f"  {row['error']}" if row["error"] else ""
        click.echo(f"{row['id']:>6} {row['status']:<7} {where:<20} {row['path']}{tail}")
