"""`marco-svc worker`: a Celery worker that scores images and makes heatmaps."""

from __future__ import annotations

import socket

import click

from marco_svc.cli.common import CliState, pass_state

POOLS = ("solo", "prefork", "threads")


@click.command("worker")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Tasks at once (processes with --pool prefork, threads with --pool threads).",
)
@click.option(
    "--pool",
    type=click.Choice(POOLS),
    default="solo",
    show_default=True,
    help="solo: one task at a time in this process; prefork: child processes.",
)
@click.option("--hostname", default=None, help="Worker name (default: marco@HOST).")
@pass_state
def command(state: CliState, concurrency: int, pool: str, hostname: str | None) -> None:
    """Take scoring and heatmap tasks from the broker (setting broker_url) until SIGTERM.

    `marco-svc watch` or `serve` sends the images waiting to be scored; run as many
    workers as the machines allow (each loads the active model once; setting
    scoring_threads=1 when several share a machine). Every worker needs the database, the
    image files and the data folder (models, heatmaps) at the same paths as the server.
    A task is acknowledged once done: a worker killed mid-task loses nothing.
    """
    state.long_running = True
    settings = state.settings
    if not settings.broker_url:
        raise click.ClickException("no broker configured: set broker_url (MARCO_BROKER_URL)")
    state.runtime(upgrade=False)  # fail now, in one line, if the database is unusable
    state.close()
    from marco_svc.tasks.app import worker_app

    app = worker_app(settings)
    name = hostname or f"marco-{settings.broker_queue}@{socket.gethostname()}"
    app.worker_main(
        argv=[
            "worker",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            f"--queues={settings.broker_queue}",
            f"--hostname={name}",
            f"--loglevel={settings.log_level.upper()}",
            "--without-gossip",
            "--without-mingle",
        ]
    )
