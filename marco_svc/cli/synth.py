"""`marco-svc synth`: synthetic drop images (plates, training sets, a gallery, one drop).

Everything written here is marked synthetic; see marco_svc/synth.
"""

from __future__ import annotations

from pathlib import Path

import click

from marco_svc.cli.common import (
    describe_plate,
    plate_options,
    progress_bar,
    size_option,
    write_synthetic_plate,
)

# Rendering and its heavy imports load only when a synth command runs.


@click.group("synth")
def command() -> None:
    """Render synthetic (not real) drop images: plates, training sets, a gallery."""


@command.command("plate")
@click.option(
    "--out", type=click.Path(file_okay=False), required=True, help="Folder to write into."
)
@plate_options
def plate(
    out: str,
    seed: int,
    wells: str,
    drops: int,
    layout: str,
    barcode: str | None,
    image_size: tuple[int, int],
) -> None:
    """Write a synthetic plate in an imager's layout (no ingest; see `marco-svc demo`)."""
    written = write_synthetic_plate(Path(out), seed, wells, drops, layout, barcode, image_size)
    click.echo(describe_plate(written))


@command.command("dataset")
@click.option(
    "--out", type=click.Path(file_okay=False), required=True, help="Folder to write into."
)
@click.option("--count", "-n", type=click.IntRange(min=1), required=True, help="Number of images.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@size_option("256x306", "HEIGHTxWIDTH, rendered directly at that size.")
@click.option(
    "--group-size",
    type=click.IntRange(min=1),
    default=96,
    show_default=True,
    help="Images per group (synthetic plate) in the manifest.",
)
@click.option(
    "--backgrounds",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Folder of real clear-drop images to draw into (never your test images).",
)
@click.option("--background-share", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option(
    "--look",
    "looks",
    multiple=True,
    metavar="NAME[=SHARE]",
    help="Imager look to mix in (repeat; default: formulatrix only): formulatrix, minstrel, "
    "polariser, wide, close, hanging, or a registered one.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes (the output does not depend on it).",
)
def dataset(
    out: str,
    count: int,
    seed: int,
    image_size: tuple[int, int],
    group_size: int,
    backgrounds: str | None,
    background_share: float,
    looks: tuple[str, ...],
    jobs: int,
) -> None:
    """Write a class-balanced labelled training set and its manifest.csv."""
    from marco_svc.synth.background import backgrounds_from_folder
    from marco_svc.synth.dataset import write_dataset

    found = backgrounds_from_folder(backgrounds) if backgrounds else ()
    with progress_bar(count, "rendering") as progress:
        manifest = write_dataset(
            out,
            count,
            seed=seed,
            size=image_size,
            group_size=group_size,
            backgrounds=found,
            background_share=background_share,
            jobs=jobs,
            progress=progress,
            looks=_look_mix(looks),
        )
    click.echo(f"wrote {count} SYNTHETIC images and {manifest}")


def _look_mix(specs: tuple[str, ...]) -> dict[str, float] | None:
    """{look: share} from NAME[=SHARE] options (share 1 when left out)."""
    from marco_svc.synth.looks import LOOKS

    mix: dict[str, float] = {}
    for spec in specs:
        name, _, share = spec.partition("=")
        if name not in LOOKS:
            raise click.BadParameter(f"unknown look {name!r} (known: {', '.join(LOOKS)})")
        try:
            mix[name] = float(share) if share else 1.0
        except ValueError:
            raise click.BadParameter(f"{spec!r}: the share must be a number") from None
        if mix[name] <= 0:
            raise click.BadParameter(f"{spec!r}: the share must be positive")
    return mix or None


@command.command("gallery")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="synth_gallery.png",
    show_default=True,
    help="PNG to write.",
)
@click.option(
    "--seeds",
    type=click.IntRange(1, 12),
    default=4,
    show_default=True,
    help="Columns (seeds 0..N-1).",
)
@click.option(
    "--real",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Folder of real drop images for a first row to compare with.",
)
@size_option("160x191", "Render size of each tile.")
@click.option(
    "--colours",
    type=click.IntRange(2, 256),
    default=None,
    help="Quantise to a palette of this many colours (a smaller file).",
)
def gallery(
    out: str, seeds: int, real: str | None, image_size: tuple[int, int], colours: int | None
) -> None:
    """A contact sheet of every class and bad-drop variant."""
    from marco_svc.synth.gallery import contact_sheet, save_sheet

    real_files = sorted(Path(real).glob("*.jp*g")) if real else []
    sheet = contact_sheet(
        range(seeds), tile=image_size, real=real_files[:: max(len(real_files) // seeds, 1)]
    )
    click.echo(f"wrote {save_sheet(sheet, out, colours)}")


@command.command("drop")
@click.argument("label")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--variant", default=None, help="Sub-kind, e.g. 'out of focus' for a bad drop.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="JPEG to write.")
@size_option("1024x1224", "HEIGHTxWIDTH.")
@click.option(
    "--look",
    default="formulatrix",
    show_default=True,
    help="Imager look: formulatrix, minstrel, polariser, wide, close, hanging.",
)
def drop(
    label: str, seed: int, variant: str | None, out: str, image_size: tuple[int, int], look: str
) -> None:
    """Render one drop of a ten-way class and print its ground truth as JSON."""
    import json

    from marco_svc.synth.render import render_drop

    try:
        rendered = render_drop(label, seed, image_size, variant=variant, look=look)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    Path(out).write_bytes(rendered.to_jpeg())
    click.echo(json.dumps(rendered.truth()))
