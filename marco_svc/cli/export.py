"""`marco-svc export`: scores for other systems (ISPyB auto-scores)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from marco_svc.cli.common import CliState, pass_state

if TYPE_CHECKING:
    from collections.abc import Iterable

    from marco_svc.ispyb import AutoScoreRow
    from marco_svc.runtime import Runtime


@click.group("export")
def command() -> None:
    """Export scores to other systems."""


def _path_map(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[str, str] | None:
    if value is None:
        return None
    old, sep, new = value.partition("=")
    if not (sep and old and new):
        raise click.BadParameter(f"{value!r} is not OLD=NEW, e.g. /mnt/imager=/dls/i02-2/data")
    return old, new


def _version_id(runtime: Runtime, ref: str) -> int:
    """The ModelVersion row of NAME[:VERSION]: resolved as everywhere (`registry.resolve`),
    else, for a model no longer in the registry, the row by name (and version)."""
    from sqlalchemy import select

    from marco_svc import registry
    from marco_svc.db.models import ModelVersion

    try:
        model = registry.resolve(runtime.settings, ref, db=runtime.db)
        name, version = model.card.name, model.card.version
    except registry.ModelStoreError:
        name, version = registry.parse_ref(ref)
    query = select(ModelVersion.id).where(ModelVersion.name == name)
    if version is not None:
        query = query.where(ModelVersion.version == version)
    with runtime.db.session() as session:
        found = session.scalars(
            query.order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
        ).first()
    if found is None:
        raise click.ClickException(f"no scores of model {ref!r} in the database")
    return found


@command.command("ispyb")
@click.option("--plate", "barcode", default=None, help="Only this plate (default: all).")
@click.option(
    "--model",
    "model_ref",
    default="",
    help="NAME[:VERSION]: only that model's scores (default: each image's latest score).",
)
@click.option(
    "--map-path",
    "path_map",
    metavar="OLD=NEW",
    default=None,
    callback=_path_map,
    help="Rewrite image paths under folder OLD to NEW: the path ISPyB knows the file by.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, allow_dash=True),
    default=None,
    help="SQL file to write (default: standard output).",
)
@click.option(
    "--call",
    "call",
    is_flag=True,
    help="Call upsert_sample_image_auto_score on the ISPyB database instead of writing SQL.",
)
@click.option(
    "--ispyb-url",
    default=None,
    help="SQLAlchemy URL of the ISPyB database (default: the ispyb_database_url setting).",
)
@pass_state
def ispyb(
    state: CliState,
    barcode: str | None,
    model_ref: str,
    path_map: tuple[str, str] | None,
    out: str | None,
    call: bool,
    ispyb_url: str | None,
) -> None:
    """Scores as ISPyB auto-scores of the MARCO schema: four rows (clear, crystal,
    precipitant, other) per scored image, classes mapped by name. Writes SQL for the
    mariadb client, or with --call runs the procedure on ISPyB in one transaction."""
    from marco_svc.ispyb import call_procedure, export_rows, write_sql

    if call and out is not None:
        raise click.UsageError("--out writes SQL; --call runs it: pass one of them")
    if ispyb_url and not call:
        raise click.UsageError("--ispyb-url is used with --call only")
    url = (ispyb_url or state.settings.ispyb_database_url) if call else ""
    if call and not url:
        raise click.UsageError(
            "no ISPyB database: pass --ispyb-url or set ispyb_database_url "
            "(MARCO_ISPYB_DATABASE_URL)"
        )
    runtime = state.runtime()
    version_id = _version_id(runtime, model_ref) if model_ref else None
    with runtime.db.session() as session:
        rows = export_rows(session, barcode, version_id, path_map)  # ValueError: no plate
        if call:
            count = call_procedure(url, rows)
            where = "called upsert_sample_image_auto_score for"
        elif out is None or out == "-":
            count = write_sql(rows, sys.stdout)
            where = "wrote"
        else:
            count = _write_file(Path(out), rows)
            where = "wrote"
    target = f" to {out}" if out not in (None, "-") else ""
    click.echo(f"{where} {count} auto-score row(s) of {count // 4} image(s){target}", err=True)


def _write_file(path: Path, rows: Iterable[AutoScoreRow]) -> int:
    """Write the SQL next to `path`, then move it there: no half-written file on an error."""
    from marco_svc.ispyb import write_sql

    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="\n") as handle:
            count = write_sql(rows, handle)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return count
