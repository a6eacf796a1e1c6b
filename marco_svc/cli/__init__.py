"""The `marco-svc` command line: one group, one module per family of commands."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from marco_svc import __version__
from marco_svc.cli.common import CliState
from marco_svc.errors import first_line
from marco_svc.nets import quiet_tensorflow_when_imported

# One module per command, in this order. The edge install (core + `edge` extra) lacks the
# server's packages: a command whose module needs one is listed with a note saying so.
COMMAND_MODULES = (
    "db",
    "serve",
    "ingest",
    "watch",
    "plates",
    "images",
    "models",
    "score",
    "scores",
    "evaluate",
    "export",
    "labels",
    "settings",
    "demo",
    "synth",
    "train",
    "tokens",
    "worker",
    "edge",
)


class _OneLineErrors(click.Group):
    """Report any failure as one line and a non-zero exit; MARCO_DEBUG=1 shows the traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BrokenPipeError:  # the reader went away (`| head`): click ends quietly
            raise
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None
        except Exception as exc:
            if os.environ.get("MARCO_DEBUG"):
                raise
            raise click.ClickException(first_line(exc)) from None


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="marco-svc")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="MARCO_CONFIG",
    help="TOML settings file (default: MARCO_CONFIG).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log progress (at the log_level setting).")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, verbose: bool) -> None:
    """Score crystallization-drop images as imagers produce them."""
    ctx.obj = CliState(config_file, verbose)
    ctx.call_on_close(ctx.obj.close)


def _not_installed(name: str, missing: str) -> click.Command:
    """Stands in for a command whose module needs a package this install lacks."""

    def fail() -> None:
        raise click.ClickException(
            f"`marco-svc {name}` needs the package {missing!r}, which this install lacks "
            "(an edge install runs `marco-svc edge`); install marco-svc[server]"
        )

    return click.Command(
        name,
        callback=fail,
        help=f"(Not in this install: needs {missing}; pip install 'marco-svc[server]'.)",
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


def _load_command(name: str) -> click.Command:
    try:
        module = importlib.import_module(f"marco_svc.cli.{name}")
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if not missing or missing in ("marco_svc", "imager_adapters"):
            raise  # our own code is broken: say so
        return _not_installed(name, missing)
    return module.command


for _name in COMMAND_MODULES:
    cli.add_command(_load_command(_name))


def main() -> None:
    if not {"-v", "--verbose"} & set(sys.argv[1:]):
        quiet_tensorflow_when_imported()  # its start-up lines show with -v only
    cli(prog_name="marco-svc")
