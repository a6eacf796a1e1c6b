"""`marco-svc labels`: human scores (web-page corrections) exported for training."""

from __future__ import annotations

from pathlib import Path

import click

from marco_svc.cli.common import CliState, echo_json, json_option, pass_state
from marco_svc.train.human_labels import (
    ExportError,
    check_scheme,
    export_human_labels,
    parse_since,
)


@click.group("labels")
def command() -> None:
    """Human labels for fine-tuning."""


@command.command("export")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--scheme",
    default=None,
    metavar="marco4|merck10",
    help="Label scheme to write; marco4 maps ten-way labels to four-way (default: as stored).",
)
@click.option(
    "--plate", "plates", multiple=True, metavar="BARCODE", help="Only this plate (repeatable)."
)
@click.option("--since", default=None, metavar="ISO", help="Only labels given at or after this.")
@json_option
@pass_state
def export(
    state: CliState,
    out: Path,
    scheme: str | None,
    plates: tuple[str, ...],
    since: str | None,
    as_json: bool,
) -> None:
    """Write each image's latest human label to OUT.csv, a training manifest
    (path,label,group,...; group = barcode/well/drop keeps a drop in one split)."""
    try:
        check_scheme(scheme)
        moment = parse_since(since) if since is not None else None
        summary = export_human_labels(state.runtime().db, out, scheme, plates, moment)
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        echo_json(summary.as_dict())
    else:
        click.echo(summary.line())
