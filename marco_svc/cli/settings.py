"""`marco-svc settings`: the settings table with live values."""

from __future__ import annotations

import click

from marco_svc.cli.common import CliState, echo_json, json_option, pass_state


@click.command("settings")
@json_option
@pass_state
def command(state: CliState, as_json: bool) -> None:
    """Every setting: name, environment variable, value and help."""
    rows = state.settings.describe()
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        click.echo(f"{row['env']:<24} = {row['value']!r}\n    {row['help']}")
