"""`marco-svc score`: score image files with a model and print the results; no database."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from marco_svc import registry
from marco_svc.cli.common import CliState, existing_paths, pass_state
from marco_svc.ingest_files import image_files
from marco_svc.nets import quiet_tensorflow
from marco_svc.nets.card import ModelCard
from marco_svc.nets.runner import FORMAT_PREFERENCE, choose_format, open_runner
from marco_svc.scoring.batch import Limits, Scored, score_batch
from marco_svc.scoring.confidence import unknown_below
from marco_svc.scoring.rules import CrystalRule, decide


class _Output:
    """One record per image, as JSON lines or CSV (a header, then one row per image)."""

    def __init__(self, fmt: str, labels: Sequence[str]) -> None:
        self.fmt, self.labels = fmt, list(labels)
        if fmt == "csv":
            self.csv = csv.writer(sys.stdout, lineterminator="\n")
            header = ["path", "model", "top", "hit", "p_crystal", "rule", *self.labels, "error"]
            self.csv.writerow(header)

    def scored(self, record: dict[str, Any]) -> None:
        if self.fmt == "jsonl":
            click.echo(json.dumps(record))
            return
        probs, rule = record["probs"], record["rule"]
        self.csv.writerow(
            [
                record["path"],
                record["model"],
                record["top"],
                "true" if record["hit"] else "false",
                f"{record['p_crystal']:.6g}",
                _rule_text(rule),
                *(f"{probs[label]:.6g}" for label in self.labels),
                "",
            ]
        )

    def failed(self, path: Path, reason: str) -> None:
        if self.fmt == "jsonl":
            click.echo(json.dumps({"path": str(path), "error": reason}))
        else:
            self.csv.writerow([str(path), "", "", "", "", "", *([""] * len(self.labels)), reason])


def _rule_text(rule: dict[str, Any]) -> str:
    """The rule as applied: `top_k:K` or `threshold:T` with T resolved from the card."""
    text = f"top_k:{rule['k']}" if rule["kind"] == "top_k" else f"threshold:{rule['threshold']:g}"
    return text + (",unknown=hit" if rule.get("unknown") == "hit" else "")


def _chunks(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@click.command("score")
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--model",
    "ref",
    default="",
    help="NAME, NAME:VERSION or a model folder (default: the `model` setting, else the "
    "active version, else the shipped default).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True
)
@click.option(
    "--artifact",
    type=click.Choice(FORMAT_PREFERENCE),
    help="Which artifact runs (default: keras when TensorFlow is installed, else TFLite).",
)
@click.option("--batch-size", type=click.IntRange(1, 256), default=8, show_default=True)
@pass_state
def command(
    state: CliState,
    paths: tuple[str, ...],
    ref: str,
    fmt: str,
    artifact: str | None,
    batch_size: int,
) -> None:
    """Score image files (or every image under folders); the database is not touched.

    Prints one record per image: path, probs (label -> probability, calibrated when the
    card says), top, hit and p_crystal under the `crystal_rule` setting, the band (JSON
    only: unknown, confident, or null for an uncalibrated model) and the rule used. A file
    that cannot be scored gets a record with its error; the exit status is then 1.
    """
    settings = state.settings
    rule = CrystalRule.parse(settings.crystal_rule)
    files = [file for root in existing_paths(paths) for file in image_files(root)]
    model = registry.resolve(settings, ref)
    card = model.card
    decide(dict.fromkeys(card.labels, 1.0 / len(card.labels)), rule, card.operating_points)
    artifact = choose_format(card, artifact)
    if artifact == "keras":
        quiet_tensorflow()
    runner = open_runner(card, model.folder, artifact)
    output = _Output(fmt, card.labels)
    limits = Limits(settings.max_image_pixels)
    failed = 0
    for chunk in _chunks(files, batch_size):
        readable: list[tuple[Path, bytes]] = []
        errors: dict[Path, str] = {}
        for path in chunk:
            try:
                readable.append((path, path.read_bytes()))
            except OSError as exc:
                errors[path] = f"cannot read the file: {exc.strerror or exc}"
        scored, bad = score_batch(runner, readable, limits)
        errors.update((failure.key, failure.reason) for failure in bad)
        records = {s.key: _record(card, s, rule) for s in scored}
        for path in chunk:
            if path in errors:
                output.failed(path, errors[path])
            else:
                output.scored(records[path])
        failed += len(errors)
    if failed:
        click.echo(f"{failed} of {len(files)} files could not be scored", err=True)
        raise click.exceptions.Exit(1)


def _record(card: ModelCard, scored: Scored[Path], rule: CrystalRule) -> dict[str, Any]:
    """What is printed for one scored file."""
    below = unknown_below(card.calibration)
    decision = decide(scored.probabilities, rule, card.operating_points, below)
    return {
        "path": str(scored.key),
        "model": card.ref,
        "probs": scored.probabilities,
        "top": scored.top,
        "hit": decision.hit,
        "p_crystal": decision.p_crystal,
        "band": decision.band,
        "rule": decision.rule,
    }
