"""`marco-svc models promote`: activate a candidate model version only if it beats the
active one on held-out labelled images (`marco_svc.train.promotion`)."""

from __future__ import annotations

import click

from marco_svc.cli.common import (
    CliState,
    artifact_option,
    echo_json,
    json_option,
    pass_state,
    progress_enabled,
)
from marco_svc.labels import SCHEMES
from marco_svc.nets import quiet_tensorflow


@click.command("promote")
@click.argument("candidate")
@click.option(
    "--data",
    "data",
    required=True,
    metavar="DATA",
    help="Held-out labelled images (as `evaluate` reads them), never used in training.",
)
@click.option(
    "--recall-tolerance",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Crystal recall the candidate may lose (0.02 = two points) and still be better.",
)
@click.option(
    "--activate/--no-activate",
    default=True,
    help="--no-activate: compare and record only.",
)
@artifact_option
@click.option(
    "--scheme",
    type=click.Choice(list(SCHEMES)),
    help="Label scheme of DATA (default: guessed from its labels).",
)
@click.option("--batch-size", type=click.IntRange(1, 1024), default=32, show_default=True)
@json_option
@pass_state
def command(
    state: CliState,
    candidate: str,
    data: str,
    recall_tolerance: float,
    activate: bool,
    fmt: str | None,
    scheme: str | None,
    batch_size: int,
    as_json: bool,
) -> None:
    """Activate CANDIDATE (NAME[:VERSION]) only if it beats the active model on DATA.

    Both run over DATA; the candidate is better when its four-way accuracy is higher and
    its crystal recall (crystal drops called Crystals) is not lower. The candidate's card
    records both models' figures and the decision (metrics.promotion.<data name>) and
    its evaluation (metrics.evaluation.<data name>, as `evaluate --update-card`).
    """
    quiet_tensorflow()
    from marco_svc.train.promotion import PromotionError
    from marco_svc.train.promotion import promote as run_promotion

    def progress(message: str) -> None:
        if progress_enabled() or state.verbose:
            click.echo(message, err=True)

    try:
        result = run_promotion(
            state.settings,
            state.runtime().db,
            candidate,
            data,
            scheme=scheme,
            fmt=fmt,
            batch_size=batch_size,
            activate=activate,
            recall_tolerance=recall_tolerance,
            progress=progress,
        )
    except PromotionError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        echo_json(result.as_dict())
        return
    before, after = result.incumbent, result.candidate
    width = max(len(before.model), len(after.model), 8) + 2
    click.echo(f"{'(active -> candidate)':<20}{before.model:>{width}}{after.model:>{width}}")
    for name, old, new in (
        ("four-way accuracy", before.accuracy, after.accuracy),
        ("crystal recall", before.crystal_recall, after.crystal_recall),
    ):
        click.echo(f"{name:<20}{_pct(old):>{width}}{_pct(new):>{width}}")
    if result.activated:
        verdict = "activated"
    else:
        verdict = "better, not activated (--no-activate)" if result.better else "not activated"
    click.echo(f"{after.model}: {verdict} ({'; '.join(result.reasons)})")
    if result.card:
        click.echo(f"recorded in {result.card} (metrics.promotion.{result.data_name})")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
