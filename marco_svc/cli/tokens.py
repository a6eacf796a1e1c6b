"""`marco-svc tokens`: API tokens with roles (only their SHA-256 is stored)."""

from __future__ import annotations

import click

from marco_svc import tokens
from marco_svc.cli.common import CliState, echo_json, json_option, pass_state


@click.group("tokens")
def command() -> None:
    """Create, list and revoke API bearer tokens (roles: robot, lims, scientist, admin)."""


@command.command("create")
@click.option(
    "--role",
    required=True,
    help="robot (uploads), lims (reads), scientist (reads, labels) or admin (everything).",
)
@click.option("--name", default=None, help="A label for the token (default: ROLE-N).")
@pass_state
def create(state: CliState, role: str, name: str | None) -> None:
    """Make a token; it is printed once, alone on the last line (`| tail -1`)."""
    try:
        info, secret = tokens.create(state.runtime().db, role, name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"id: {info.id}")
    click.echo(f"name: {info.name}")
    click.echo(f"role: {info.role}")
    click.echo("token (shown only now; store it safely):", err=True)
    click.echo(secret)


@command.command("list")
@json_option
@pass_state
def list_tokens(state: CliState, as_json: bool) -> None:
    """Every stored token with role and times (never the secret)."""
    found = tokens.list_tokens(state.runtime().db)
    if as_json:
        echo_json([info.to_dict() for info in found])
        return
    if not found:
        click.echo("no stored tokens (marco-svc tokens create --role ROLE)")
        return
    click.echo(f"{'id':>5} {'role':<9} {'state':<7} {'created':<19} {'last used':<19} name")
    for info in found:
        status = "revoked" if info.revoked else "active"
        created = info.created_at.isoformat(sep=" ", timespec="seconds")
        used = (
            info.last_used_at.isoformat(sep=" ", timespec="seconds") if info.last_used_at else "-"
        )
        click.echo(f"{info.id:>5} {info.role:<9} {status:<7} {created:<19} {used:<19} {info.name}")


@command.command("revoke")
@click.argument("ref")
@pass_state
def revoke(state: CliState, ref: str) -> None:
    """Revoke the token with id REF, or every active token named REF."""
    try:
        revoked = tokens.revoke(state.runtime().db, ref)
    except LookupError as exc:
        raise click.ClickException(str(exc.args[0])) from None
    for info in revoked:
        click.echo(f"revoked {info.id} {info.name} ({info.role})")
