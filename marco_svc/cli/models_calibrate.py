"""`marco-svc models calibrate`: fit a model's four-way temperature on labelled images,
without retraining, and write it (with its Unknown band) to the model card."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import click

from marco_svc import registry
from marco_svc.cli.common import (
    CliState,
    artifact_option,
    echo_json,
    json_option,
    pass_state,
    progress_bar,
)
from marco_svc.cli.evaluate import _check_writable, _sync_database_row
from marco_svc.config import Settings
from marco_svc.labels import SCHEMES
from marco_svc.nets.card import ModelCard
from marco_svc.registry import StoredModel
from marco_svc.train.calibration import CALIBRATED_HEAD, calibrate_card
from marco_svc.train.datasets import LabelledSet, read_dataset
from marco_svc.train.evaluation import (
    EvaluationResult,
    apply_to_card,
    card_figures,
    data_name,
    evaluate_model,
)


def stored_scores(settings: Settings, model: StoredModel) -> int:
    """How many scores the database holds from this model's name:version (0 without one)."""
    db = registry.existing_database(settings)
    if db is None:
        return 0
    from sqlalchemy import func, select
    from sqlalchemy.exc import SQLAlchemyError

    from marco_svc.db.models import ModelVersion, Score

    try:
        with db.session() as session:
            return (
                session.scalar(
                    select(func.count(Score.id))
                    .join(ModelVersion, Score.model_version_id == ModelVersion.id)
                    .where(
                        ModelVersion.name == model.card.name,
                        ModelVersion.version == model.card.version,
                    )
                )
                or 0
            )
    except SQLAlchemyError:
        return 0
    finally:
        db.dispose()


def _check_in_place(settings: Settings, model: StoredModel) -> None:
    """Refuse to change the probabilities of a shipped, read-only or already used version."""
    _check_writable(model)
    count = stored_scores(settings, model)
    if count:
        raise click.ClickException(
            f"{model.ref} has {count} stored scores made without this calibration; give "
            "--version NEW to register a calibrated copy (activating it rescores every image)"
        )


def _check_new(settings: Settings, ref: str) -> None:
    registry.parse_ref(ref)
    try:
        registry.find(settings, ref)
    except registry.ModelStoreError:
        return
    raise click.ClickException(f"{ref} exists already; give another --version")


def _evaluate(
    state: CliState, model: StoredModel, data: LabelledSet, fmt: str | None, batch_size: int
) -> EvaluationResult:
    with progress_bar(len(data.examples), "scoring") as progress:
        return evaluate_model(
            model,
            data,
            fmt,
            batch_size,
            progress,
            max_pixels=state.settings.max_image_pixels,
            calibrated=False,
        )


@click.command("calibrate")
@click.argument("model_ref", metavar="MODEL")
@click.option(
    "--data",
    required=True,
    metavar="DATA",
    help="Labelled images to fit the temperature on: a folder per class, a CSV manifest "
    "(path,label[,group]) or TFRecord shards; not the images the model trained on.",
)
@click.option(
    "--test",
    "test_data",
    metavar="DATA",
    help="Other labelled images to measure ECE and operating points on (default: DATA).",
)
@click.option(
    "--unknown-below",
    type=click.FloatRange(0, 1, max_open=True),
    help="Calibrated top-1 four-way confidence below which a call is Unknown "
    "(default: the card's value, else 0.5).",
)
@artifact_option
@click.option("--scheme", type=click.Choice(list(SCHEMES)), help="Label scheme of the data.")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=32, show_default=True)
@click.option(
    "--version",
    "new_version",
    help="Register a calibrated copy as NAME:VERSION instead of changing MODEL (needed for "
    "a shipped model, or one whose version has scored images).",
)
@json_option
@pass_state
def command(
    state: CliState,
    model_ref: str,
    data: str,
    test_data: str | None,
    unknown_below: float | None,
    fmt: str | None,
    scheme: str | None,
    batch_size: int,
    new_version: str | None,
    as_json: bool,
) -> None:
    """Calibrate MODEL (NAME, NAME:VERSION or a model folder) by temperature scaling.

    Runs MODEL over DATA (the network's own probabilities), fits the four-way head's
    temperature T, measures ECE before and after on --test (else on DATA, then in-sample),
    and writes T, the figures and `unknown_below` to the card's `calibration`. From then
    on every path (server, edge agent, `marco-svc score`, evaluation) serves
    softmax(log p / T). The card's operating points are measured again on the calibrated
    probabilities (the old thresholds were on the network's scale). The card is loaded and
    its artifacts checked again after writing.
    """
    settings = state.settings
    model = registry.find(settings, model_ref)
    if CALIBRATED_HEAD not in model.card.heads:
        raise click.ClickException(f"{model.ref} has no {CALIBRATED_HEAD} head to calibrate")
    if new_version is None:
        _check_in_place(settings, model)
    else:
        _check_new(settings, f"{model.card.name}:{new_version}")
    fitting = read_dataset(data, scheme)
    testing = read_dataset(test_data, scheme or fitting.scheme) if test_data else None
    validation = _evaluate(state, model, fitting, fmt, batch_size)
    test = _evaluate(state, model, testing, fmt, batch_size) if testing else None
    with tempfile.TemporaryDirectory(prefix="marco-calibrate-") as tmp:
        folder = model.folder
        if new_version is not None:
            folder = Path(tmp) / "model"
            shutil.copytree(model.folder, folder)
        card = ModelCard.load(folder)
        measured = calibrate_card(card, validation, test, unknown_below)
        card.operating_points = {}  # thresholds on the uncalibrated scale no longer apply
        apply_to_card(card, data_name(test_data or data), card_figures(measured))
        card.save(folder)
        ModelCard.load(folder).verify(folder)  # the card reads back and its files match
        if new_version is None:
            ref, where = model.ref, str(folder / "card.json")
            _sync_database_row(settings, model)
        else:
            db = state.runtime().db
            stored = registry.register(settings, folder, version=new_version, db=db)
            ref, where = stored.ref, str(stored.folder / "card.json")
    entry = card.calibration[CALIBRATED_HEAD]
    if as_json:
        echo_json(_summary(ref, where, entry, card))
        return
    click.echo(
        f"calibrated {ref} ({CALIBRATED_HEAD}): T {entry['temperature']:.3f}, ECE "
        f"{entry['ece_before']:.3f} -> {entry['ece_after']:.3f} on {entry['evaluated_on']} "
        f"({entry['examples']} images); Unknown below {entry['unknown_below']:.2f}: "
        f"{entry['unknown_share']:.1%} of calls; card: {where}"
    )


def _summary(ref: str, card_path: str, entry: dict[str, Any], card: ModelCard) -> dict:
    return {
        "model": ref,
        "card": card_path,
        "calibration": {CALIBRATED_HEAD: entry},
        "operating_points": card.operating_points,
    }
