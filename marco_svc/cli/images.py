"""`marco-svc images`: stored images, by status."""

from __future__ import annotations

import click

from marco_svc import queries
from marco_svc.adapters import adapters_for
from marco_svc.cli.common import (
    CliState,
    echo_json,
    exit_if_some_failed,
    json_option,
    pass_state,
    report_failure,
    summary,
)
from marco_svc.db.models import IMAGE_STATUSES
from marco_svc.ingest_files import retry_failed


@click.group("images")
def command() -> None:
    """List stored images; offer failed ones again."""


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
        score = row["score"]
        verdict = f"{'HIT ' if score['hit'] else ''}{score['top_class']}" if score else "-"
        tail = f"  {row['error']}" if row["error"] else ""
        click.echo(
            f"{row['id']:>6} {row['status']:<7} {where:<20} {verdict:<24} {row['path']}{tail}"
        )


@command.command("retry")
@click.option("--reason", default=None, help="Only failures whose reason contains this text.")
@click.option("--adapter", "adapter_name", help="Use only this imager adapter.")
@pass_state
def retry(state: CliState, reason: str | None, adapter_name: str | None) -> None:
    """Offer failed files again (e.g. after fixing a naming scheme or metadata).

    Each is read and parsed anew: it becomes an image, or its reason is updated.
    Exit status 3 when some still fail.
    """
    chosen = adapters_for(state.settings, adapter_name)
    counts, _ = retry_failed(state.runtime(), chosen, reason, report_failure)
    click.echo(summary(counts))
    exit_if_some_failed(counts)
