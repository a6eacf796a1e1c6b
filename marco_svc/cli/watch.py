"""`marco-svc watch`: ingest images as imagers write them, until interrupted."""

from __future__ import annotations

import click

from marco_svc.cli.common import CliState, existing_paths, pass_state
from marco_svc.cli.lifecycle import stop_requested


@click.command("watch")
@click.argument("folders", nargs=-1, required=True)
@click.option("--adapter", "adapter_name", help="Use only this imager adapter.")
@click.option(
    "--polling",
    is_flag=True,
    default=None,
    help="Poll the folders (network shares) instead of OS file events.",
)
@pass_state
def command(
    state: CliState, folders: tuple[str, ...], adapter_name: str | None, polling: bool | None
) -> None:
    """Ingest every image that arrives under FOLDERS (and what arrived while stopped).

    A file is read once its writer closed it or its size and mtime have been stable
    for the setting watch_settle_seconds. New images are scored by the active model
    (setting scoring_enabled). Runs until Ctrl-C or SIGTERM.
    """
    from marco_svc.service import Service

    state.long_running = True
    for folder in existing_paths(folders):
        if not folder.is_dir():
            raise click.ClickException(f"not a folder: {folder}")
    service = Service.assemble(state.runtime(), folders, adapter=adapter_name, polling=polling)
    watcher = service.watcher
    assert watcher is not None  # folders are required
    with stop_requested() as stop, service:
        click.echo(
            f"watching {', '.join(watcher.roots)} "
            f"({'polling' if watcher.options.polling else 'file events'}, "
            f"settle {watcher.options.settle:g} s); Ctrl-C stops",
            err=True,
        )
        while not stop.wait(1.0):
            if (trouble := service.trouble()) is not None:
                raise click.ClickException(f"{trouble.title.lower()}: {trouble.detail}")
    counts = watcher.stats
    click.echo(
        f"stopped: {counts['created']} new, {counts['duplicate']} already stored, "
        f"{counts['failed']} failed",
        err=True,
    )
