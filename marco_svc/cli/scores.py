"""`marco-svc scores`: score what is pending now, re-decide hits, make a heatmap."""

from __future__ import annotations

import click

from marco_svc.cli.common import CliState, echo_json, json_option, pass_state


@click.group("scores")
def command() -> None:
    """Score stored images and manage their decisions."""


@command.command("run")
@click.option("--model", "model_ref", default="", help="NAME[:VERSION] (default: active).")
@click.option("--artifact", default=None, help="keras, tflite-fp32, tflite-fp16, tflite-int8.")
@click.option("--limit", type=int, default=None, help="Score at most this many images.")
@json_option
@pass_state
def run(
    state: CliState, model_ref: str, artifact: str | None, limit: int | None, as_json: bool
) -> None:
    """Score every image that the model has not scored yet, then exit."""
    from marco_svc import registry
    from marco_svc.scoring.engine import ScoringEngine

    runtime = state.runtime()
    model = registry.resolve(runtime.settings, model_ref, db=runtime.db) if model_ref else None
    engine = ScoringEngine(runtime, model, artifact, batch_size=runtime.settings.scoring_batch_size)
    done = engine.run_pending(limit)
    result = {"model": engine.model.ref, "artifact": engine.runner.fmt, "images": done}
    if as_json:
        echo_json(result)
    else:
        click.echo(f"scored {done} image(s) with {engine.model.ref} ({engine.runner.fmt})")


@command.command("redecide")
@json_option
@pass_state
def redecide(state: CliState, as_json: bool) -> None:
    """Apply the configured crystal rules (crystal_rule, lab_rules) to every stored score
    again; probabilities stay, only hit and rule change. No model runs."""
    from marco_svc.scoring.lab_rules import LabRules
    from marco_svc.scoring.store import redecide as apply

    settings = state.settings
    counts = apply(state.runtime().db, LabRules.parse(settings.crystal_rule, settings.lab_rules))
    if as_json:
        echo_json(counts)
    else:
        click.echo(f"{counts['changed']} of {counts['scores']} decisions changed")


@command.command("heatmap")
@click.argument("image_id", type=int)
@click.option("--class", "class_label", default=None, help="Class (default: crystal/top).")
@click.option("--samples", type=int, default=None, help="Noisy copies (default: setting).")
@pass_state
def heatmap(state: CliState, image_id: int, class_label: str | None, samples: int | None) -> None:
    """Make (or find) the SmoothGrad heatmap of one image for the model that scores now;
    print its path."""
    from marco_svc import registry
    from marco_svc.db.models import ModelVersion
    from marco_svc.scoring.heatmaps import compute
    from marco_svc.scoring.saliency import SmoothGradParams

    runtime = state.runtime()
    version_id = registry.scoring_version_id(runtime.settings, runtime.db)
    with runtime.db.session() as session:
        version = session.get(ModelVersion, version_id) if version_id is not None else None
    if version is None:
        raise click.ClickException("no model: pass --model, register/import one, or activate one")
    params = SmoothGradParams(n=samples or runtime.settings.smoothgrad_samples)
    made = compute(runtime, image_id, version, class_label, params)
    click.echo(made.path)
