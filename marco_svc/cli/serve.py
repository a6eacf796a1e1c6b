"""`marco-svc serve`: the REST API and web page, and the watcher of the configured folders."""

from __future__ import annotations

import errno
import gc
import socket

import click

from marco_svc.cli.common import CliState, pass_state
from marco_svc.cli.lifecycle import interrupt_on_sigterm


@click.command("serve")
@click.option("--host", default=None, help="Address to listen on (default: setting host).")
@click.option("--port", default=None, type=int, help="Port (default: setting port).")
@pass_state
def command(state: CliState, host: str | None, port: int | None) -> None:
    """Run the service until interrupted (Ctrl-C or SIGTERM).

    With the setting watch_roots, images arriving there are ingested as by
    `marco-svc watch`, in a background thread; new images are scored by the active
    model in another (setting scoring_enabled). waitress's limits (connections, idle
    timeout, request body size) follow the settings: see marco_svc/http_server.py.
    """
    state.long_running = True
    settings = state.settings
    host, port = host or settings.host, port or settings.port
    _check_port(host, port)  # before TensorFlow loads: a busy port fails in a second
    import waitress

    from marco_svc.api import create_app
    from marco_svc.http_server import raise_open_files_limit, waitress_options
    from marco_svc.service import Service

    runtime = state.runtime()
    service = Service.assemble(runtime)
    app = create_app(service)
    options = waitress_options(settings)
    open_files = raise_open_files_limit(options["connection_limit"])
    if open_files is not None and 0 <= open_files < options["connection_limit"] + 64:
        click.echo(
            f"warning: only {open_files} open files allowed (ulimit -n); fewer than "
            f"http_connection_limit={options['connection_limit']} connections will fit",
            err=True,
        )
    click.echo(
        f"marco-svc serving on http://{host}:{port}/ "
        f"(database: {runtime.db.url.render_as_string(hide_password=True)})"
    )
    with interrupt_on_sigterm(), service:
        if service.watcher is not None:
            click.echo(f"watching {', '.join(service.watcher.roots)}")
        # What start-up loaded (TensorFlow, the app) stays for good: keep it out of the
        # garbage collector's full passes, which otherwise add ~50 ms to some requests.
        gc.freeze()
        waitress.serve(app, host=host, port=port, **options)
    click.echo("marco-svc stopped")


def _check_port(host: str, port: int) -> None:
    """One clear line when the address cannot be listened on (in use, or not ours)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(f"port {port} is in use on {host}") from None
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
