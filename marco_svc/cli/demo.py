"""`marco-svc demo`: write a realistic SYNTHETIC plate and ingest it, to try the service."""

from __future__ import annotations

from pathlib import Path

import click

from imager_adapters.record import Rejection
from imager_adapters.registry import parse_path
from marco_svc.cli.common import CliState, echo_json, json_option, pass_state
from marco_svc.cli.ingest import ingest_paths, summary
from marco_svc.cli.synth import describe_plate, plate_options, write_synthetic_plate


def score_demo_plate(state: CliState, image_ids: list[int]) -> None:
    """Scoring goes here: once marco_svc.scoring can score stored images, score these with
    the active model so the demo plate shows hits. Until then the images stay `new`."""


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
    counts, results = ingest_paths(runtime, [written.image_root])
    score_demo_plate(state, [r.image_id for r in results if r.outcome != "failed"])

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
    settings = runtime.settings
    click.echo(
        "look at it:\n"
        f"  marco-svc plates show {barcode}\n"
        f"  marco-svc serve   then open http://{settings.host}:{settings.port}/api/v1/plates/{barcode}"
    )
