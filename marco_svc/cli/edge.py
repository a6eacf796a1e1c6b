"""`marco-svc edge`: the agent on the imager PC (score with LiteRT, forward the results),
and `marco-svc edge status`. Works in an install of the core and the `edge` extra only:
nothing here (or in `marco_svc.edge`) imports the database, the web stack or TensorFlow.
"""

from __future__ import annotations

import logging
import logging.handlers
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from marco_svc.cli.common import CliState, echo_json, json_option
from marco_svc.edge import LOG_FILE, OUTBOX_FILE, TOKEN_ENV, default_state_dir

log = logging.getLogger("marco_svc.edge")
_DEFAULTS = "marco_svc.edge.defaults"  # run options given before the subcommand
LOG_BYTES = 5 * 1024**2
LOG_BACKUPS = 5


def _run_options(function: Callable[..., Any]) -> Callable[..., Any]:
    decorators = [
        click.option(
            "--watch",
            "watch",
            multiple=True,
            type=click.Path(exists=True, file_okay=False),
            help="Folder the imager writes images to (repeatable); watched recursively.",
        ),
        click.option(
            "--server",
            envvar="MARCO_EDGE_SERVER",
            help="The marco-svc service, e.g. https://marco.example.org (or MARCO_EDGE_SERVER).",
        ),
        click.option(
            "--token",
            envvar=TOKEN_ENV,
            help=f"API token of role robot (better: the environment variable {TOKEN_ENV}).",
        ),
        click.option(
            "--model",
            "model",
            type=click.Path(exists=True, file_okay=False),
            help="Pin a local model folder (card.json and a TFLite file); turns updates off.",
        ),
        click.option(
            "--updates/--no-updates",
            default=None,
            help="Fetch the model the service offers (default: on, off with --model).",
        ),
        _state_option(),
        click.option("--adapter", "adapter", help="Use only this imager adapter."),
        click.option(
            "--imager", "imager", help="Imager name sent for paths that name none (e.g. RI54-1)."
        ),
        click.option(
            "--polling",
            is_flag=True,
            default=None,
            help="Poll the folders (network shares) instead of OS file events.",
        ),
        click.option(
            "--settle",
            type=click.FloatRange(min=0),
            help="Seconds a file's size and mtime must be stable (default: watch_settle_seconds).",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(1, 256),
            help="Images per model call (default: scoring_batch_size).",
        ),
        click.option(
            "--once",
            is_flag=True,
            default=None,
            help="Score what is there now, forward, send the files the service asked for, "
            "and exit (no watching).",
        ),
        click.option(
            "--pull-seconds",
            type=click.FloatRange(min=0),
            help="Seconds between asking the service which image files it wants "
            "(default 30; 0: never send files).",
        ),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def _state_option() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--state",
        "state_dir",
        type=click.Path(file_okay=False),
        envvar="MARCO_EDGE_STATE",
        help="Folder of the outbox, fetched models and edge.log "
        "(default: the per-user data folder / edge; or MARCO_EDGE_STATE).",
    )


def _given(ctx: click.Context, options: dict[str, Any]) -> dict[str, Any]:
    """The options set on the command line or by environment (not defaults)."""
    return {
        name: value
        for name, value in options.items()
        if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)
    }


def _with_defaults(ctx: click.Context, options: dict[str, Any]) -> dict[str, Any]:
    """A subcommand's options, with those given before it (`edge --state X status`)."""
    merged = dict(options)
    for name, value in ctx.meta.get(_DEFAULTS, {}).items():
        if name in merged and ctx.get_parameter_source(name) in (None, ParameterSource.DEFAULT):
            merged[name] = value
    return merged


@click.group("edge", invoke_without_command=True)
@_run_options
@click.pass_context
def command(ctx: click.Context, **options: Any) -> None:
    """The edge agent for the imager PC: score new images with LiteRT, send the results.

    `marco-svc edge --watch DIR --server URL` (the same as `edge run`) watches DIR,
    scores every image that arrives (and what arrived while stopped) with the model
    the service offers or `--model`, keeps each result in a local outbox, and sends
    the outbox to the service, retrying until it answers. Runs until Ctrl-C or SIGTERM.
    Needs only the `edge` extra (pip install 'marco-svc[edge]'): no TensorFlow, no
    database server. `marco-svc edge status` shows the outbox and the model in use.
    """
    if ctx.invoked_subcommand is not None:
        ctx.meta[_DEFAULTS] = _given(ctx, options)
        return
    if not _given(ctx, options):
        click.echo(ctx.get_help())
        return
    _run(ctx, ctx.find_object(CliState), options)


@command.command("run")
@_run_options
@click.pass_context
def run_command(ctx: click.Context, **options: Any) -> None:
    """Watch, score and forward (the same as `marco-svc edge --watch ...`)."""
    _run(ctx, ctx.find_object(CliState), _with_defaults(ctx, options))


@command.command("status")
@_state_option()
@json_option
@click.pass_context
def status_command(ctx: click.Context, state_dir: str | None, as_json: bool) -> None:
    """The outbox (pending, sent, failed), the last forward and the model in use."""
    state_dir = _with_defaults(ctx, {"state_dir": state_dir})["state_dir"]
    report = edge_status(Path(state_dir) if state_dir else default_state_dir())
    if as_json:
        echo_json(report)
        return
    click.echo(_describe_status(report))


# -- status ---------------------------------------------------------------------------------


def edge_status(state: Path) -> dict[str, Any]:
    """What `edge status` reports, from the outbox in `state` (read while the agent runs)."""
    from marco_svc.edge.outbox import STATES, Outbox

    report: dict[str, Any] = {
        "state_dir": str(state),
        "outbox": dict.fromkeys(STATES, 0),
        "last_forward_at": None,
        "model": None,
        "agent": None,
        "agent_stopped_at": None,
        "forward_problem": None,
        "log": str(state / LOG_FILE),
    }
    try:
        outbox = Outbox(state / OUTBOX_FILE, create=False)
    except FileNotFoundError:
        report["note"] = "no outbox yet: the agent has not run with this state folder"
        return report
    with outbox:
        report["outbox"] = outbox.depth()
        report["last_forward_at"] = outbox.last_forward()
        for name in ("model", "agent", "agent_stopped_at", "forward_problem"):
            report[name] = outbox.get_meta(name)
    return report


def _describe_status(report: dict[str, Any]) -> str:
    depth = report["outbox"]
    model = report["model"]
    lines = [
        f"state:        {report['state_dir']}",
        f"outbox:       {depth['pending']} pending, {depth['sent']} sent, {depth['failed']} failed",
        f"last forward: {report['last_forward_at'] or 'never'}",
        "model:        "
        + (
            f"{model['ref']} ({model['format']}, sha256 {model['sha256'][:12]}, {model['source']})"
            if model
            else "none"
        ),
    ]
    agent = report["agent"]
    if agent:
        stopped = report["agent_stopped_at"]
        ran = f"started {agent['started_at']} (pid {agent['pid']})"
        if stopped and stopped >= agent["started_at"]:
            ran += f", stopped {stopped}"
        lines.append(f"agent:        {ran}")
    if report["forward_problem"]:
        problem = report["forward_problem"]
        lines.append(f"problem:      {problem['error']} (since {problem['at']})")
    if report.get("note"):
        lines.append(f"note:         {report['note']}")
    lines.append(f"log:          {report['log']}")
    return "\n".join(lines)


# -- run ------------------------------------------------------------------------------------


@contextmanager
def edge_logging(state: Path, verbose: bool) -> Iterator[Path]:
    """Log to `<state>/edge.log` (rotated: 5 x 5 MB) and stderr, for the block."""
    state.mkdir(parents=True, exist_ok=True)
    path = state / LOG_FILE
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [
        logging.handlers.RotatingFileHandler(
            path, maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
        ),
        logging.StreamHandler(),
    ]
    root = logging.getLogger()
    saved = root.level
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    quiet = logging.getLogger("watchdog")
    quiet_level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        yield path
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(saved)
        quiet.setLevel(quiet_level)


def _run(ctx: click.Context, cli_state: CliState | None, options: dict[str, Any]) -> None:
    if not options.get("watch"):
        raise click.UsageError("give a folder to watch: --watch DIR", ctx)
    if not options.get("server"):
        raise click.UsageError("give the service's address: --server URL", ctx)
    if not options.get("token"):
        raise click.UsageError(f"give an API token: set {TOKEN_ENV} (or --token)", ctx)
    state = Path(options["state_dir"]) if options.get("state_dir") else default_state_dir()
    verbose = bool(cli_state and cli_state.verbose)
    with edge_logging(state, verbose) as log_path:
        contexts = [ctx, ctx.parent] if ctx.parent is not None else [ctx]
        if ParameterSource.COMMANDLINE in [c.get_parameter_source("token") for c in contexts]:
            log.warning(
                "the token is on the command line, where other users of this PC can see "
                "it; set %s instead",
                TOKEN_ENV,
            )
        agent, models = _assemble(state, options, cli_state.config_file if cli_state else None)
        with agent.outbox:
            if options.get("once"):
                _run_once(agent, models)
                return
            from marco_svc.cli.lifecycle import stop_requested

            click.echo(
                f"edge agent: watching {', '.join(agent.roots)}, sending to "
                f"{agent.forwarder.server.base_url if agent.forwarder else '-'}; "
                f"state {state}, log {log_path}; Ctrl-C stops",
                err=True,
            )
            with stop_requested() as stop:
                agent.run_until(stop)


def _assemble(state: Path, options: dict[str, Any], config_file: str | None) -> tuple[Any, Any]:
    """The agent (with outbox, forwarder and model manager) from the options and settings."""
    from imager_adapters.fields import check_imager
    from marco_svc.adapters import adapters_for
    from marco_svc.config import SettingsError, load_settings
    from marco_svc.edge.agent import AgentOptions, EdgeAgent
    from marco_svc.edge.client import Server, is_plain_http_to_remote
    from marco_svc.edge.forwarder import Forwarder
    from marco_svc.edge.model_updates import ModelError, ModelManager
    from marco_svc.edge.outbox import Outbox
    from marco_svc.edge.pull import INTERVAL as PULL_INTERVAL
    from marco_svc.edge.pull import FilePuller
    from marco_svc.file_access import FilePolicy

    try:
        settings = load_settings(config_file)
        adapters = adapters_for(settings, options.get("adapter"))
        imager = check_imager(options.get("imager") or "")
        server = Server(options["server"], options["token"])
    except (SettingsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if is_plain_http_to_remote(server.base_url):
        log.warning("%s is plain http: the token and results travel unencrypted", server.base_url)
    outbox = Outbox(state / OUTBOX_FILE)
    try:
        models = ModelManager(
            state,
            server,
            pinned=Path(options["model"]) if options.get("model") else None,
            updates=options.get("updates"),
            on_switch=lambda model: outbox.set_meta("model", model.summary()),
        )
        models.load_start_model()
        polling = options.get("polling")
        settle = options.get("settle")
        agent_options = AgentOptions(
            settle=settings.watch_settle_seconds if settle is None else settle,
            max_wait=settings.watch_max_wait_seconds,
            rescan_interval=settings.watch_rescan_seconds,
            batch_size=options.get("batch_size") or settings.scoring_batch_size,
            queue_size=settings.watch_queue_size,
            polling=settings.watch_polling if polling is None else polling,
            imager=imager,
            policy=FilePolicy(settings.max_image_pixels, settings.max_image_bytes).with_roots(
                settings.image_roots
            ),
        )
        agent = EdgeAgent(
            options["watch"],
            outbox,
            models,
            Forwarder(outbox, server),
            adapters,
            agent_options,
        )
        pull_seconds = options.get("pull_seconds")
        if pull_seconds != 0:
            interval = PULL_INTERVAL if pull_seconds is None else pull_seconds
            agent.puller = FilePuller(server, agent.roots, agent.policy, interval=interval)
    except (ModelError, ValueError) as exc:
        outbox.close()
        raise click.ClickException(str(exc)) from None
    except BaseException:
        outbox.close()
        raise
    return agent, models


def _run_once(agent: Any, models: Any) -> None:
    """`--once`: fetch a model if needed, score what is there, forward, answer one poll of
    asked files, report."""
    from marco_svc.edge.model_updates import ModelError

    if models.updates:
        models.check_once()
    try:
        counts = agent.scan_once()
    except ModelError as exc:
        raise click.ClickException(f"no model to score with: {exc}") from None
    forwarded = agent.forwarder.drain(time.monotonic() + 300)
    if agent.puller is not None and forwarded.error is None:
        agent.puller.pull_once()
    depth = agent.outbox.depth()
    click.echo(
        f"scored {counts['scored']}, failed {counts['failed']}, not taken "
        f"{counts['not_taken']}; sent {forwarded.sent}; outbox: {depth['pending']} pending, "
        f"{depth['sent']} sent, {depth['failed']} failed",
        err=True,
    )
    if forwarded.error is not None:
        raise click.ClickException(f"results stay in the outbox: {forwarded.error}")
