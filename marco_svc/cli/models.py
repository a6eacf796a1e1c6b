"""`marco-svc models`: list, show and activate model versions; import the official MARCO model;
export and calibrate (`models_calibrate`) a model; promote one if better (`models_promote`)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import click
from sqlalchemy import select

from marco_svc import registry
from marco_svc.cli import models_calibrate, models_promote
from marco_svc.cli.common import CliState, echo_json, json_option, pass_state, progress_enabled
from marco_svc.db.models import ModelVersion
from marco_svc.ingest_files import image_files
from marco_svc.nets import quiet_tensorflow
from marco_svc.nets.card import ModelCard


@click.group("models")
def command() -> None:
    """Model versions: the registry in the data folder, the shipped models, the active one."""


@command.command("list")
@json_option
@pass_state
def list_models(state: CliState, as_json: bool) -> None:
    """Registered and shipped models, with the one that is active in the database."""
    models = registry.all_models(state.settings)
    with state.runtime().db.session() as session:
        rows = {
            (row.name, row.version): row for row in session.execute(select(ModelVersion)).scalars()
        }
    entries = []
    for model in models:
        row = rows.pop((model.card.name, model.card.version), None)
        entries.append(
            {
                "ref": model.ref,
                "architecture": model.card.architecture,
                "scheme": model.card.scheme,
                "input_size": list(model.card.input_size),
                "formats": sorted(model.card.artifacts),
                "where": model.where,
                "folder": str(model.folder),
                "in_database": row is not None,
                "active": bool(row and row.active),
            }
        )
    for (name, version), row in sorted(rows.items()):
        entries.append(
            {
                "ref": f"{name}:{version}",
                "architecture": row.architecture,
                "scheme": row.scheme,
                "where": "missing: in the database, its folder is not in this data folder",
                "in_database": True,
                "active": row.active,
            }
        )
    if as_json:
        echo_json(entries)
        return
    for entry in entries:
        mark = "*" if entry["active"] else " "
        click.echo(f"{mark} {entry['ref']:<32} {entry['architecture']:<20} {entry['where']}")


@command.command("show")
@click.argument("ref")
@pass_state
def show(state: CliState, ref: str) -> None:
    """A model's card (REF: NAME, NAME:VERSION or a model folder), as JSON."""
    model = registry.find(state.settings, ref)
    echo_json({**model.card.to_dict(), "folder": str(model.folder), "where": model.where})


@command.command("activate")
@click.argument("ref")
@pass_state
def activate(state: CliState, ref: str) -> None:
    """Make REF (NAME or NAME:VERSION) the one active model version."""
    model = registry.find(state.settings, ref)
    db = state.runtime().db
    registry.upsert_version(db, model)
    name, version = registry.activate(db, model.ref)
    click.echo(f"active: {name}:{version}")


command.add_command(models_calibrate.command)
command.add_command(models_promote.command)


@command.command("import-marco")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--name", default="marco", show_default=True, help="Name to register it under.")
@click.option(
    "--images",
    "images_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="JPEG images to compare on (default: 8 generated ones).",
)
@json_option
@pass_state
def import_marco(
    state: CliState, source: Path, name: str, images_dir: Path | None, as_json: bool
) -> None:
    """Import the official MARCO SavedModel (folder or savedmodel.zip) if it reproduces.

    Its variables are mapped onto marco-svc's Keras network; both run on sample images and
    the model is registered only if all probabilities agree within 1e-4.
    """
    quiet_tensorflow()
    from marco_svc.registry.import_marco import import_marco as run_import

    images, images_from = None, ""
    if images_dir is not None:
        images = _jpegs(images_dir)
        images_from = f"{images_dir.resolve()} ({len(images)} JPEG images)"

    def progress(message: str) -> None:
        if progress_enabled() or state.verbose:
            click.echo(message, err=True)

    result = run_import(
        source,
        state.settings,
        name=name,
        images=images,
        images_from=images_from,
        db=state.runtime().db,
        progress=progress,
    )
    comparison = result.comparison
    if as_json:
        echo_json(
            {
                "ref": result.model.ref,
                "folder": str(result.model.folder),
                "already_registered": result.already_registered,
                "compared_images": comparison.images,
                "max_abs_difference": comparison.max_abs_difference,
                "probability_range": list(comparison.probability_range),
            }
        )
        return
    verb = "already registered" if result.already_registered else "registered"
    click.echo(
        f"{verb} {result.model.ref}: max |difference| {comparison.max_abs_difference:.3g} "
        f"on {comparison.images} images; activate with `marco-svc models activate "
        f"{result.model.ref}`"
    )


def _jpegs(folder: Path) -> list[bytes]:
    images = [path.read_bytes() for path in image_files(folder)]
    images = [data for data in images if data[:2] == b"\xff\xd8"]
    if not images:
        raise click.ClickException(f"no JPEG images in {folder}")
    return images


@command.command("export")
@click.argument("ref")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["tflite-fp32", "tflite-fp16", "tflite-int8"]),
    required=True,
    help="TFLite flavour: float32, float16 weights, or full-integer int8.",
)
@click.option(
    "--images",
    type=click.Path(exists=True, path_type=Path),
    help="Validation images (file or folder) to check against; default: synthetic drops.",
)
@click.option(
    "--count",
    type=click.IntRange(1),
    default=300,
    show_default=True,
    help="How many validation images to use.",
)
@click.option(
    "--min-agreement",
    type=click.FloatRange(0, 1),
    default=0.99,
    show_default=True,
    help="Refuse the export below this top-1 agreement with the Keras model.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write a copy of the model with the export into this new folder (not registered).",
)
@click.option(
    "--float-stem",
    is_flag=True,
    help="int8: keep the ops that read the image in float32 (the rest int8).",
)
@json_option
@pass_state
def export(
    state: CliState,
    ref: str,
    fmt: str,
    images: Path | None,
    count: int,
    min_agreement: float,
    out: Path | None,
    float_stem: bool,
    as_json: bool,
) -> None:
    """Export a model to TFLite, checked against its Keras model.

    int8 is calibrated on the validation images. The export is refused (nothing written)
    when its top-1 agreement with the Keras model is below --min-agreement; otherwise the
    file joins the model folder and the agreement figures go into its card. A shipped
    (read-only) model is copied first and registered as a new version, VERSION-FORMAT;
    with --out the copy goes to that folder instead.
    """
    from marco_svc.train.export import ExportRefused, export_model
    from marco_svc.train.export_data import file_inputs, synthetic_inputs

    settings = state.settings
    model = registry.find(settings, ref)
    if out is not None and out.exists() and any(out.iterdir()):
        raise click.ClickException(f"--out {out} is not empty")
    quiet_tensorflow()
    if images is not None:
        inputs = file_inputs(model.card, image_files(images), count)
        if not len(inputs):
            raise click.ClickException(f"no readable images in {images}")
    else:
        inputs = synthetic_inputs(model.card, count)
    with tempfile.TemporaryDirectory(prefix="marco-export-") as tmp:
        folder = model.folder
        if out is not None or model.where == "shipped":  # never write into a shipped model
            folder = out or Path(tmp) / "model"
            shutil.copytree(model.folder, folder, dirs_exist_ok=True)
        try:
            figures = export_model(
                ModelCard.load(folder), folder, fmt, inputs, min_agreement, float_stem=float_stem
            )
        except ExportRefused as exc:
            if out is not None:
                shutil.rmtree(out, ignore_errors=True)
            raise click.ClickException(str(exc)) from None
        made = _keep_export(state, model, folder, fmt, out)
    if as_json:
        echo_json({"model": made, "format": fmt, **figures})
        return
    agreement = ", ".join(f"{k} {v:.2%}" for k, v in figures["top1_agreement"].items())
    click.echo(
        f"exported {made} as {fmt} ({figures['bytes'] / 1e6:.2f} MB): top-1 agreement "
        f"{agreement}, max |difference| {figures['max_probability_difference']:.3g} on "
        f"{figures['images']} images"
    )


def _keep_export(
    state: CliState, model: registry.StoredModel, folder: Path, fmt: str, out: Path | None
) -> str:
    """What now holds the export: the --out copy, the registered model itself, or a new
    version VERSION-FORMAT of a shipped model."""
    if out is not None:
        return f"{model.ref} (a copy in {out})"
    db = state.runtime().db
    if folder == model.folder:
        registry.upsert_version(db, model)
        return model.ref
    version = f"{model.card.version}-{fmt}"
    return registry.register(state.settings, folder, version=version, db=db).ref


@command.command("check-plate")
@click.argument("ref")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "fmt", help="Artifact to run (default: the preferred one).")
@click.option("--record", is_flag=True, help="Store the shares in the model card.")
@json_option
@pass_state
def check_plate(
    state: CliState, ref: str, folder: Path, fmt: str | None, record: bool, as_json: bool
) -> None:
    """How the model calls an unlabelled plate: the share of each top label per head.

    For a plate known to be (nearly) all clear, the Clear share is a sanity check on real
    images. --record stores it in the card under metrics.unlabelled_plates.<folder name>
    (never used to choose or train a model).
    """
    quiet_tensorflow()
    from marco_svc.train.plate_check import top_label_shares

    model = registry.find(state.settings, ref)
    files = list(image_files(folder))
    formats = [fmt] if fmt else _runnable(model)
    shares = {name: top_label_shares(model, files, name) for name in formats}
    if record:
        if model.where == "shipped":
            raise click.ClickException(f"{model.ref} is shipped and read-only")
        plates = model.card.metrics.setdefault("unlabelled_plates", {})
        plates.setdefault(folder.resolve().name, {}).update(shares)  # other formats kept
        model.card.save(model.folder)
    if as_json:
        echo_json({"model": model.ref, "folder": str(folder), "shares": shares})
        return
    for name, result in shares.items():
        four = ", ".join(f"{k} {v:.1%}" for k, v in result.get("marco4", {}).items())
        click.echo(f"{model.ref} [{name}] on {result['images']} images: {four}")


def _runnable(model: registry.StoredModel) -> list[str]:
    from marco_svc.nets.runner import FORMAT_PREFERENCE

    return [fmt for fmt in FORMAT_PREFERENCE if fmt in model.card.artifacts]
