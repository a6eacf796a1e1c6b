"""`marco-svc plates`: what is stored, per plate."""

from __future__ import annotations

import click

from marco_svc import queries
from marco_svc.cli.common import CliState, echo_json, json_option, pass_state


@click.group("plates")
def command() -> None:
    """List plates and show one."""


@command.command("list")
@json_option
@pass_state
def list_plates(state: CliState, as_json: bool) -> None:
    """Every plate with its type and image count."""
    with state.runtime().db.session() as session:
        rows = queries.list_plates(session)
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        click.echo(f"{row['barcode']:<20} {row['plate_type']:<7} {row['image_count']:>6} images")


@command.command("show")
@click.argument("barcode")
@json_option
@pass_state
def show(state: CliState, barcode: str, as_json: bool) -> None:
    """One plate: inspections, and every image with well, drop, status and latest score."""
    with state.runtime().db.session() as session:
        detail = queries.plate_detail(session, barcode)
    if detail is None:
        raise click.ClickException(f"no plate with barcode {barcode!r}")
    if as_json:
        echo_json(detail)
        return
    count = detail["image_count"]
    click.echo(f"plate {detail['barcode']} ({detail['plate_type']}), {count} images")
    for image in detail["images"]:
        score = image["score"]
        verdict = f"{score['top_class']} p_crystal={score['p_crystal']:.3f}" if score else "-"
        hit = "HIT" if score and score["hit"] else ""
        click.echo(
            f"  {image['id']:>6} {image['well']:<4} d{image['drop']} {image['status']:<7} "
            f"{hit:<3} {verdict}"
        )
