"""`marco-svc ingest`: files or folders through the imager adapters into the database."""

from __future__ import annotations

import os

import click

from marco_svc.adapters import adapters_for
from marco_svc.cli.common import (
    CliState,
    echo_json,
    existing_paths,
    exit_if_some_failed,
    json_option,
    pass_state,
    report_failure,
    summary,
)
from marco_svc.ingest_files import ingest_paths, unserved


@click.command("ingest")
@click.argument("paths", nargs=-1, required=True)
@click.option("--adapter", "adapter_name", help="Use only this imager adapter.")
@json_option
@pass_state
def command(
    state: CliState, paths: tuple[str, ...], adapter_name: str | None, as_json: bool
) -> None:
    """Store image files (or every image under folders) as plates, drops and images.

    Exit status 3 when any file failed (each is recorded with its reason; the others
    are stored); links under a folder may not lead out of it (or the served folders).
    """
    roots = existing_paths(paths)
    for root in roots:
        if root.is_dir() and not os.access(root, os.R_OK | os.X_OK):
            raise click.ClickException(f"cannot read folder {root}: permission denied")
    chosen = adapters_for(state.settings, adapter_name)
    on_failure = None if as_json else report_failure
    counts, results = ingest_paths(state.runtime(), roots, chosen, on_failure)
    if as_json:
        echo_json(
            {
                "counts": dict(counts),
                "results": [
                    {
                        "path": str(r.path),
                        "outcome": r.outcome,
                        "image_id": r.image_id,
                        "reason": r.reason,
                    }
                    for r in results
                ],
            }
        )
    else:
        click.echo(summary(counts))
        for root in unserved(state.settings, roots):
            click.echo(
                f"note: images under {root} are stored and scored, but the API serves no "
                "file outside data_dir, watch_roots and image_roots (add it to image_roots)",
                err=True,
            )
    exit_if_some_failed(counts)
