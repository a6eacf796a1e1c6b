"""`marco-svc train CONFIG`: train (or fine-tune) a model from a TOML preset."""

from __future__ import annotations

from pathlib import Path

import click

from marco_svc import registry
from marco_svc.cli.common import CliState, echo_json, json_option, pass_state, progress_enabled


def _overrides(
    name: str | None, version: str | None, epochs: int | None, images: int | None
) -> dict[str, dict[str, object]]:
    changes: dict[str, dict[str, object]] = {"model": {}, "recipe": {}, "data": {}}
    if name:
        changes["model"]["name"] = name
    if version:
        changes["model"]["version"] = version
    if epochs:
        changes["recipe"]["epochs"] = epochs
    if images:
        changes["data"]["synthetic"] = {"images": images}
    return changes


@click.command("train")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Model folder to write.")
@click.option("--name", help="Model name (overrides the preset).")
@click.option("--version", "version", help="Model version (overrides the preset).")
@click.option("--epochs", type=click.IntRange(1), help="Epochs (overrides the preset).")
@click.option("--images", type=click.IntRange(10), help="Synthetic images (overrides).")
@click.option("--register/--no-register", default=True, help="Register the trained model.")
@json_option
@pass_state
def command(
    state: CliState,
    config: str,
    out: str | None,
    name: str | None,
    version: str | None,
    epochs: int | None,
    images: int | None,
    register: bool,
    as_json: bool,
) -> None:
    """Train a model as CONFIG says (presets: models/presets/*.toml).

    The data sets are checked before training starts. Checkpoints under OUT/checkpoints
    make the run resumable: run the same command again to continue. At the end the model
    is evaluated on its held-out split (OUT/report), exported as the preset says (each
    export checked against the Keras model) and, unless --no-register, registered.
    """
    from marco_svc.nets import quiet_tensorflow

    quiet_tensorflow()
    from marco_svc.train.config import load_config
    from marco_svc.train.trainer import train

    settings = state.settings
    preset = Path(config)
    if not preset.exists():
        candidate = registry.SHIPPED_DIR / "presets" / f"{config}.toml"
        preset = candidate if candidate.exists() else preset
    cfg = load_config(preset, _overrides(name, version, epochs, images))
    folder = (
        Path(out)
        if out
        else settings.resolved_data_dir / "training" / cfg.model.name / cfg.model.version
    )
    say = (lambda m: click.echo(m, err=True)) if not as_json else (lambda m: None)
    result = train(cfg, settings, folder, progress=say, verbose=1 if progress_enabled() else 2)
    ref = result.card.ref
    if register:
        stored = registry.register(settings, folder, db=state.runtime().db)
        ref = stored.ref
    summary = {
        "model": ref,
        "folder": str(folder),
        "registered": register,
        "seconds": {k: round(v, 1) for k, v in result.seconds.items()},
        "metrics": result.card.metrics,
        "exports": result.card.exports,
    }
    if as_json:
        echo_json(summary)
    else:
        click.echo(f"trained {ref} in {result.seconds['total']:.0f} s -> {folder}")
