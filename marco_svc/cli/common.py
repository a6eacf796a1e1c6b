"""What every command shares: lazily loaded settings and runtime, JSON output, path checks."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from marco_svc.config import Settings, load_settings
from marco_svc.nets.runner import FORMAT_PREFERENCE

if TYPE_CHECKING:  # the database stack loads when a command opens the runtime
    from marco_svc.ingest import IngestResult
    from marco_svc.runtime import Runtime
    from marco_svc.synth.plates import WrittenPlate


class CliState:
    """Settings and the database, opened on first use and closed when the command ends."""

    def __init__(self, config_file: str | None, verbose: bool = False) -> None:
        self.config_file = config_file
        self.verbose = verbose
        self.long_running = False
        self._settings: Settings | None = None
        self._runtime: Runtime | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_file)
            names = logging.getLevelNamesMapping()
            level = names.get(self._settings.log_level.upper(), logging.INFO)
            if not (self.verbose or self.long_running):
                level = max(level, logging.WARNING)  # one-shot commands stay quiet
            logging.basicConfig(
                level=level,
                format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            )
            if self._settings.log_level.upper() != "DEBUG":
                logging.getLogger("alembic").setLevel(logging.WARNING)
        return self._settings

    def runtime(self, upgrade: bool | None = None) -> Runtime:
        if self._runtime is None:
            from marco_svc.runtime import open_runtime

            self._runtime = open_runtime(self.settings, upgrade=upgrade)
        return self._runtime

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None


pass_state = click.make_pass_decorator(CliState)

# Exit status of `ingest` and `images retry` when some files failed (the rest were stored).
SOME_FAILED = 3

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
artifact_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMAT_PREFERENCE),
    help="Which artifact runs (default: keras when TensorFlow is installed, else TFLite).",
)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def existing_paths(paths: tuple[str, ...]) -> list[Path]:
    """The paths, or a one-line error naming the first one that does not exist."""
    found = []
    for text in paths:
        path = Path(text)
        if not path.exists():
            raise click.ClickException(f"no such file or folder: {text}")
        found.append(path)
    return found


def summary(counts: Counter[str]) -> str:
    """One line of ingest outcomes."""
    return (
        f"{counts['created']} new, {counts['duplicate']} already stored, {counts['failed']} failed"
    )


def report_failure(path: Path, result: IngestResult) -> None:
    click.echo(f"failed: {path}: {result.reason}", err=True)


def exit_if_some_failed(counts: Counter[str]) -> None:
    """Exit with SOME_FAILED when any file failed (the others were stored)."""
    if counts["failed"]:
        raise click.exceptions.Exit(SOME_FAILED)


def progress_enabled() -> bool:
    return sys.stderr.isatty()


# Synthetic plates: shared by `demo` and `synth plate`; rendering loads only when used.


def parse_size(text: str) -> tuple[int, int]:
    """'1024x1224' -> (1024, 1224): height x width."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not HEIGHTxWIDTH, e.g. 1024x1224") from None
    if not (32 <= height <= 8192 and 32 <= width <= 8192):
        raise click.BadParameter("height and width must be between 32 and 8192")
    return height, width


def size_option(default: str, help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--image-size",
        "image_size",
        default=default,
        show_default=True,
        callback=lambda _ctx, _param, value: parse_size(value),
        help=help,
    )


def plate_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The options that describe a synthetic plate (shared by `demo` and `synth plate`)."""
    decorators = [
        click.option(
            "--seed",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Everything about the plate follows from it.",
        ),
        click.option("--wells", type=click.Choice(["96", "384"]), default="96", show_default=True),
        click.option(
            "--drops",
            type=click.IntRange(1, 4),
            default=2,
            show_default=True,
            help="Drops per well.",
        ),
        click.option(
            "--layout",
            default="formulatrix-flat",
            show_default=True,
            help="Imager file layout: formulatrix-flat, rock-maker, or a registered one.",
        ),
        click.option(
            "--barcode", default=None, help="Plate barcode (default: SYN and the seed in 5 digits)."
        ),
        size_option("1024x1224", "HEIGHTxWIDTH of the images (a Rock Imager frame by default)."),
    ]
    return functools.reduce(lambda f, d: d(f), reversed(decorators), function)


@contextmanager
def progress_bar(total: int, what: str) -> Iterator[Callable[[int, int], None] | None]:
    """A tqdm bar on a terminal, nothing otherwise."""
    if not progress_enabled():
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=what, unit="img") as bar:
        yield lambda done, _total: bar.update(done - bar.n)


def write_synthetic_plate(
    out: Path,
    seed: int,
    wells: str,
    drops: int,
    layout: str,
    barcode: str | None,
    image_size: tuple[int, int],
) -> WrittenPlate:
    """Render and write one plate, with a progress bar; raises ClickException on bad input."""
    from marco_svc.synth.plates import write_plate

    total = int(wells) * drops
    with progress_bar(total, "rendering") as progress:
        try:
            return write_plate(
                out,
                layout=layout,
                barcode=barcode,
                wells=int(wells),
                drops=drops,
                seed=seed,
                size=image_size,
                progress=progress,
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None


def describe_plate(written: WrittenPlate) -> str:
    counts = Counter(img.render.label for img in written.images)
    mix = ", ".join(f"{n} {label}" for label, n in counts.most_common())
    return (
        f"wrote {len(written.images)} SYNTHETIC images of plate {written.spec.barcode} "
        f"({written.layout}) to {written.root}\n"
        f"  classes: {mix}\n"
        f"  ground truth: {written.truth_csv}"
    )
