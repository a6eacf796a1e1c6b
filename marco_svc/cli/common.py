"""What every command shares: lazily loaded settings and runtime, JSON output, path checks."""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click

from marco_svc.config import Settings, load_settings
from marco_svc.ingest import IngestResult
from marco_svc.runtime import Runtime, open_runtime


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
            self._runtime = open_runtime(self.settings, upgrade=upgrade)
        return self._runtime

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()


pass_state = click.make_pass_decorator(CliState)

# Exit status of `ingest` and `images retry` when some files failed (the rest were stored).
SOME_FAILED = 3

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


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


def progress_enabled() -> bool:
    return sys.stderr.isatty()
