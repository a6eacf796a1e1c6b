"""`marco-svc demo`: write a realistic SYNTHETIC plate and ingest it, to try the service."""

from __future__ import annotations

from pathlib import Path

import click

from imager_adapters.record import Rejection
from imager_adapters.registry import parse_path
from marco_svc.adapters import adapters_for
from marco_svc.cli.common import (
    CliState,
    describe_plate,
    echo_json,
    json_option,
    pass_state,
    plate_options,
    summary,
    write_synthetic_plate,
)
from marco_svc.ingest_files import ingest_paths


def score_demo_plate(state: CliState) -> str:
    """Score the demo plate with the active (else the shipped default) model."""
    from marco_svc.scoring.engine import NoModel, ScoringEngine

    runtime = state.runtime()
    try:
        engine = ScoringEngine(runtime, batch_size=runtime.settings.scoring_batch_size)
    except NoModel as exc:
        return f"not scored: {exc}"
    done = engine.run_pending()
    return f"scored {done} image(s) with {engine.model.ref} ({engine.runner.fmt})"


@click.command("demo")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for the plate (default: <data_dir>/demo).",
)
@plate_options
@json_option
@pass_state
def command(
    state: CliState,
    out: str | None,
    seed: int,
    wells: str,
    drops: int,
    layout: str,
    barcode: str | None,
    image_size: tuple[int, int],
    as_json: bool,
) -> None:
    """Write a synthetic plate (mostly clear, some precipitate, a few crystal hits, a couple of
    bad drops) through the imager adapters into the database. The images are NOT real."""
    root = Path(out) if out else state.settings.resolved_data_dir / "demo"
    written = write_synthetic_plate(root, seed, wells, drops, layout, barcode, image_size)
    first = parse_path(written.images[0].path)
    if isinstance(first, Rejection):
        raise click.ClickException(
            f"the plate is in {written.root}, but no imager adapter reads it: {first.reason}"
        )

    runtime = state.runtime()
    counts, _ = ingest_paths(runtime, [written.image_root], adapters_for(runtime.settings))
    scored = score_demo_plate(state)

    barcode = written.spec.barcode
    if as_json:
        echo_json(
            {
                "barcode": barcode,
                "root": str(written.root),
                "layout": written.layout,
                "truth": str(written.truth_csv),
                "synthetic": True,
                "ingest": dict(counts),
                "scoring": scored,
                "images": [
                    {
                        "path": str(img.path),
                        "well": img.well,
                        "drop": img.drop,
                        "label": img.render.label,
                    }
                    for img in written.images
                ],
            }
        )
        return
    click.echo(describe_plate(written))
    click.echo(f"ingested: {summary(counts)}")
    click.echo(scored)
    settings = runtime.settings
    click.echo(
        "look at it:\n"
        f"  marco-svc plates show {barcode}\n"
        f"  marco-svc serve   then open http://{settings.host}:{settings.port}/api/v1/plates/{barcode}"
    )
