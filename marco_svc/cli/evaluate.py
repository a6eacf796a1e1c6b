"""`marco-svc evaluate`: score a model on a labelled data set; write a report, update its card."""

from __future__ import annotations

import os
from datetime import UTC, datetime
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
from marco_svc.config import Settings
from marco_svc.labels import SCHEMES
from marco_svc.registry import StoredModel
from marco_svc.train.datasets import read_dataset
from marco_svc.train.evaluation import (
    EvaluationResult,
    apply_to_card,
    card_figures,
    data_name,
    evaluate_model,
    write_result_report,
)
from marco_svc.train.metrics import DEFAULT_FPRS

HEADLINE_POINT = f"fpr_{DEFAULT_FPRS[0]:g}"  # MARCO's 94% recall at 1.6% false positives


def _default_out(settings: Settings, model: StoredModel) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = (
        settings.resolved_data_dir / "reports" / f"{model.card.name}-{model.card.version}-{stamp}"
    )
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def _check_writable(model: StoredModel) -> None:
    """Refuse --update-card for shipped models and folders this user cannot write."""
    if model.where == "shipped":
        raise click.ClickException(
            f"{model.ref} ships with marco-svc and its card is read-only; register a copy "
            "(or pass its folder) to store evaluation figures"
        )
    if not os.access(model.folder, os.W_OK) or not os.access(model.folder / "card.json", os.W_OK):
        raise click.ClickException(
            f"cannot update the card of {model.ref}: {model.folder} is read-only"
        )


def _sync_database_row(settings: Settings, model: StoredModel) -> bool:
    """Refresh the model's ModelVersion row from its card when the database and row exist."""
    db = registry.existing_database(settings)
    if db is None:
        return False
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from marco_svc.db.models import ModelVersion

    try:
        with db.session() as session:
            row = session.execute(
                select(ModelVersion.id).where(
                    ModelVersion.name == model.card.name,
                    ModelVersion.version == model.card.version,
                )
            ).first()
        if row is None:
            return False
        registry.upsert_version(db, model)
        return True
    except SQLAlchemyError as exc:
        click.echo(f"warning: the database row of {model.ref} was not updated: {exc}", err=True)
        return False
    finally:
        db.dispose()


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _summary_lines(result: EvaluationResult, report: Path) -> list[str]:
    lines = [
        f"{result.model} ({result.fmt}) on {result.data}: {result.evaluated} of "
        f"{result.examples} images in {result.seconds:.1f} s"
    ]
    for scheme, head in result.heads.items():
        figures, crystal = head.figures, head.figures["crystal"]
        mapped = f" (labels mapped from {head.mapped_from})" if head.mapped_from else ""
        auc = crystal["roc_auc"]
        text = (
            f"  {scheme}{mapped}: accuracy {_pct(figures['accuracy'])}, "
            f"top-3 {_pct(figures['top_k_accuracy']['top_3'])}, crystal ROC AUC "
            f"{'-' if auc is None else f'{auc:.3f}'}"
        )
        point = crystal["operating_points"].get(HEADLINE_POINT)
        if point is not None:
            text += (
                f", crystal recall {_pct(point['recall'])} at {point['fpr']:.1%} FPR "
                f"(threshold {point['threshold']:.3f})"
            )
        lines.append(text)
    lines += [f"  skipped {head}: {why}" for head, why in result.skipped.items()]
    if result.absent:
        lines.append(f"  absent from the data (no per-class figures): {', '.join(result.absent)}")
    if result.failed:
        lines.append(f"  {len(result.failed)} images could not be read, e.g.:")
        lines += [f"    {source}: {reason}" for source, reason in result.failed[:5]]
    lines.append(f"report: {report}")
    return lines


@click.command("evaluate")
@click.argument("model_ref", metavar="MODEL")
@click.argument("data", metavar="DATA")
@artifact_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Report folder (default: <data_dir>/reports/<name>-<version>-<timestamp>).",
)
@click.option(
    "--scheme",
    type=click.Choice(list(SCHEMES)),
    help="Label scheme of DATA (default: guessed from its labels).",
)
@click.option("--batch-size", type=click.IntRange(1, 1024), default=32, show_default=True)
@click.option(
    "--update-card",
    is_flag=True,
    help="Store the key figures and operating points in the model's card.",
)
@click.option(
    "--uncalibrated",
    is_flag=True,
    help="Score the network's own probabilities, before the card's temperature scaling "
    "(not with --update-card: served thresholds apply to calibrated probabilities).",
)
@json_option
@pass_state
def command(
    state: CliState,
    model_ref: str,
    data: str,
    fmt: str | None,
    out: Path | None,
    scheme: str | None,
    batch_size: int,
    update_card: bool,
    uncalibrated: bool,
    as_json: bool,
) -> None:
    """Evaluate MODEL (NAME, NAME:VERSION or a model folder) on the labelled images in DATA.

    DATA is a folder per class, a CSV manifest (path,label[,group]) or TFRecord shards.
    Writes metrics.json (confusion matrix as fractions, per-class accuracy, one-vs-rest ROC
    AUC, top-1/2/3 accuracy, crystal miss rate under top-k rules, crystal recall at fixed
    false-positive rates), confusion and ROC plots and report.html. Images that cannot be
    read are listed and left out. Probabilities are the served ones: calibrated when the
    card has a calibration (see --uncalibrated).
    """
    settings = state.settings
    model = registry.find(settings, model_ref)
    if update_card and uncalibrated:
        raise click.UsageError("--uncalibrated figures never go into the card")
    if update_card:
        _check_writable(model)
    labelled = read_dataset(data, scheme)
    out = out or _default_out(settings, model)
    with progress_bar(len(labelled.examples), "evaluating") as progress:
        result = evaluate_model(
            model,
            labelled,
            fmt,
            batch_size,
            progress,
            max_pixels=settings.max_image_pixels,
            calibrated=not uncalibrated,
        )
    files = write_result_report(out, result)
    summary = result.summary()

    card_path, name = None, data_name(data)
    if update_card:
        apply_to_card(model.card, name, card_figures(result))
        card_path = model.card.save(model.folder)
        _sync_database_row(settings, model)
    if as_json:
        output: dict[str, Any] = {
            **summary,
            "data_name": name,
            "report": {key: str(path) for key, path in files.items()},
            "card": str(card_path) if card_path else None,
        }
        echo_json(output)
        return
    for line in _summary_lines(result, files["html"]):
        click.echo(line)
    if card_path is not None:
        click.echo(f"card updated: {card_path} (metrics.evaluation.{name}, operating points)")
