"""`marco-svc serve`: the REST API and web page."""

from __future__ import annotations

import click

from marco_svc.cli.common import CliState, pass_state


@click.command("serve")
@click.option("--host", default=None, help="Address to listen on (default: setting host).")
@click.option("--port", default=None, type=int, help="Port (default: setting port).")
@pass_state
def command(state: CliState, host: str | None, port: int | None) -> None:
    """Run the service until interrupted."""
    import waitress

    from marco_svc.api import create_app

    state.long_running = True
    settings = state.settings
    host, port = host or settings.host, port or settings.port
    app = create_app(state.runtime())
    click.echo(
        f"marco-svc serving on http://{host}:{port}/ "
        f"(database: {state.runtime().db.url.render_as_string(hide_password=True)})"
    )
    waitress.serve(app, host=host, port=port, threads=settings.threads, ident="marco-svc")
