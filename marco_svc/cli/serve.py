"""`marco-svc serve`: the REST API and web page, and the watcher of the configured folders."""

from __future__ import annotations

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
    model in another (setting scoring_enabled).
    """
    import waitress

    from marco_svc.api import create_app
    from marco_svc.scoring.worker import ScoringWorker
    from marco_svc.watch import watcher_for

    state.long_running = True
    settings = state.settings
    host, port = host or settings.host, port or settings.port
    runtime = state.runtime()
    app = create_app(runtime)
    watcher = watcher_for(runtime) if settings.watch_roots else None
    scorer = ScoringWorker(runtime) if settings.scoring_enabled else None
    click.echo(
        f"marco-svc serving on http://{host}:{port}/ "
        f"(database: {runtime.db.url.render_as_string(hide_password=True)})"
    )
    with interrupt_on_sigterm():
        if scorer is not None:
            app.extensions["marco_scorer"] = scorer
            scorer.start()
        if watcher is not None:
            app.extensions["marco_watcher"] = watcher
            watcher.start()
            click.echo(f"watching {', '.join(watcher.roots)}")
        try:
            waitress.serve(app, host=host, port=port, threads=settings.threads, ident="marco-svc")
        finally:
            if watcher is not None:
                watcher.stop()
            if scorer is not None:
                scorer.stop()
    click.echo("marco-svc stopped")
