"""`marco-svc ingest`: files or folders through the imager adapters into the database."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from imager_adapters.registry import Adapter, is_image_file, parse_path
from marco_svc.adapters import adapters_for
from marco_svc.cli.common import CliState, echo_json, existing_paths, json_option, pass_state
from marco_svc.ingest import IngestResult, ingest
from marco_svc.runtime import Runtime


def image_files(root: Path) -> Iterator[Path]:
    """Image files under root, sorted; an unreadable folder is an error, not a silent skip."""
    if root.is_file():
        yield root
        return

    def fail(exc: OSError) -> None:
        raise click.ClickException(f"cannot read folder {exc.filename}: {exc.strerror}")

    for folder, subfolders, files in os.walk(root, onerror=fail):
        subfolders.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if is_image_file(path):
                yield path


def ingest_paths(
    runtime: Runtime,
    roots: list[Path],
    chosen: list[Adapter] | None = None,
    on_failure: Callable[[Path, IngestResult], None] | None = None,
) -> tuple[Counter[str], list[IngestResult]]:
    """Ingest every image file under the roots (through the configured adapters unless
    `chosen`); counts by outcome, and every result."""
    if chosen is None:
        chosen = adapters_for(runtime.settings)
    counts: Counter[str] = Counter()
    results = []
    for root in roots:
        for path in image_files(root):
            result = ingest(runtime.db, parse_path(path, chosen), runtime.settings.max_image_pixels)
            counts[result.outcome] += 1
            results.append(result)
            if result.outcome == "failed" and on_failure is not None:
                on_failure(path, result)
    return counts, results


def summary(counts: Counter[str]) -> str:
    return (
        f"{counts['created']} new, {counts['duplicate']} already stored, {counts['failed']} failed"
    )


@click.command("ingest")
@click.argument("paths", nargs=-1, required=True)
@click.option("--adapter", "adapter_name", help="Use only this imager adapter.")
@json_option
@pass_state
def command(
    state: CliState, paths: tuple[str, ...], adapter_name: str | None, as_json: bool
) -> None:
    """Store image files (or every image under folders) as plates, drops and images."""
    roots = existing_paths(paths)
    for root in roots:
        if root.is_dir() and not os.access(root, os.R_OK | os.X_OK):
            raise click.ClickException(f"cannot read folder {root}: permission denied")
    chosen = adapters_for(state.settings, adapter_name)

    def report(path: Path, result: IngestResult) -> None:
        if not as_json:
            click.echo(f"failed: {path}: {result.reason}", err=True)

    counts, results = ingest_paths(state.runtime(), roots, chosen, report)
    if as_json:
        echo_json(
            {
                "counts": dict(counts),
                "results": [
                    {
                        "path": str(r.path),
                        "outcome": r.outcome,
                        "image_id": r.image_id,
                        "reason": r.reason,
                    }
                    for r in results
                ],
            }
        )
    else:
        click.echo(summary(counts))
