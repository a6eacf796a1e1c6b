"""API tokens: `marco-svc tokens` and marco_svc.tokens, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update

from marco_svc import tokens
from marco_svc.config import load_settings
from marco_svc.db.models import ApiToken
from marco_svc.runtime import Runtime
from marco_svc.tokens import Role
from tests.helpers import cli_json, run_cli


def cli_create(env: dict[str, str], role: str, name: str | None = None) -> tuple[int, str]:
    """Create a token through the CLI: (id, secret), the secret from the LAST line of stdout."""
    args = ["tokens", "create", "--role", role] + (["--name", name] if name else [])
    done = run_cli(*args, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    secret = lines[-1]
    assert secret.startswith("marco_") and " " not in secret, done.stdout
    assert len(secret) >= 40  # "marco_" + 32 random bytes, base64
    ids = [line.split(":", 1)[1].strip() for line in lines[:-1] if line.startswith("id:")]
    assert len(ids) == 1, done.stdout
    assert f"role: {role}" in lines[:-1]
    return int(ids[0]), secret


def all_token_cells(runtime: Runtime) -> list[str]:
    """Every value in the api_tokens table, as text."""
    with runtime.db.engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM api_tokens")).all()
    return [str(value) for row in rows for value in row]


def test_create_prints_the_token_last_and_it_authenticates_with_its_role(
    cli_env: dict[str, str], runtime: Runtime
) -> None:
    token_id, secret = cli_create(cli_env, "lims", "lab lims")
    caller = tokens.authenticate(runtime.db, [], secret)
    assert caller == tokens.Caller(
        name="lab lims", role=Role.LIMS, token_id=token_id, scope=f"token:{token_id}"
    )
    admin_id, admin_secret = cli_create(cli_env, "admin")
    admin = tokens.authenticate(runtime.db, [], admin_secret)
    assert admin is not None and admin.role is Role.ADMIN and admin.token_id == admin_id
    assert admin.name == "admin-1"  # the default name
    assert admin_secret != secret


def test_the_database_holds_only_the_hash(cli_env: dict[str, str], runtime: Runtime) -> None:
    _, secret = cli_create(cli_env, "scientist", "alice")
    cells = all_token_cells(runtime)
    assert hashlib.sha256(secret.encode()).hexdigest() in cells
    assert not [cell for cell in cells if secret in cell or secret[6:] in cell]


def test_list_shows_tokens_but_never_secrets(cli_env: dict[str, str], runtime: Runtime) -> None:
    first_id, first = cli_create(cli_env, "robot", "imager-1")
    second_id, second = cli_create(cli_env, "scientist", "bob")
    table = run_cli("tokens", "list", env=cli_env)
    assert table.returncode == 0, table.stderr
    assert "imager-1" in table.stdout and "bob" in table.stdout
    listed = cli_json("tokens", "list", env=cli_env)
    assert [(row["id"], row["name"], row["role"], row["revoked"]) for row in listed] == [
        (first_id, "imager-1", "robot", False),
        (second_id, "bob", "scientist", False),
    ]
    assert all(row["created_at"] and row["revoked_at"] is None for row in listed)
    for output in (table.stdout, str(listed)):
        assert first not in output and second not in output
        assert first[6:] not in output and second[6:] not in output


def test_revoke_by_id_refuses_that_token_only(cli_env: dict[str, str], runtime: Runtime) -> None:
    gone_id, gone = cli_create(cli_env, "lims", "same")
    kept_id, kept = cli_create(cli_env, "lims", "same")
    assert tokens.authenticate(runtime.db, [], gone) is not None
    done = run_cli("tokens", "revoke", str(gone_id), env=cli_env)
    assert done.returncode == 0, done.stderr
    assert tokens.authenticate(runtime.db, [], gone) is None
    still = tokens.authenticate(runtime.db, [], kept)
    assert still is not None and still.token_id == kept_id
    listed = {row["id"]: row for row in cli_json("tokens", "list", env=cli_env)}
    assert listed[gone_id]["revoked"] and listed[gone_id]["revoked_at"]
    assert not listed[kept_id]["revoked"]
    again = run_cli("tokens", "revoke", str(gone_id), env=cli_env)
    assert again.returncode != 0
    assert "already revoked" in again.stderr


def test_revoke_by_name_refuses_every_token_of_that_name(
    cli_env: dict[str, str], runtime: Runtime
) -> None:
    _, one = cli_create(cli_env, "robot", "imager-7")
    _, two = cli_create(cli_env, "robot", "imager-7")
    other_id, other = cli_create(cli_env, "robot", "imager-8")
    done = run_cli("tokens", "revoke", "imager-7", env=cli_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("revoked") == 2
    assert tokens.authenticate(runtime.db, [], one) is None
    assert tokens.authenticate(runtime.db, [], two) is None
    remaining = tokens.authenticate(runtime.db, [], other)
    assert remaining is not None and remaining.token_id == other_id


def test_a_configured_token_is_a_robot_with_a_setting_scope(runtime: Runtime) -> None:
    settings = load_settings(env={"MARCO_API_TOKENS": '["robot-secret-1", "robot-secret-2"]'})
    for configured in ("robot-secret-1", "robot-secret-2"):
        caller = tokens.authenticate(runtime.db, settings.api_tokens, configured)
        digest = hashlib.sha256(configured.encode()).hexdigest()[:16]
        assert caller is not None
        assert caller.role is Role.ROBOT
        assert caller.token_id is None
        assert caller.scope == f"setting:{digest}"
    assert tokens.authenticate(runtime.db, settings.api_tokens, "robot-secret-3") is None
    assert tokens.authenticate(runtime.db, [], "robot-secret-1") is None


def test_wrong_or_absurd_tokens_are_refused(cli_env: dict[str, str], runtime: Runtime) -> None:
    _, secret = cli_create(cli_env, "admin", "root")
    for wrong in ("marco_" + "A" * 43, secret[:-1], secret + "x", secret.upper(), "", " "):
        assert tokens.authenticate(runtime.db, ["configured"], wrong) is None, wrong


class NoDatabase:
    """A Database that fails the test if it is used."""

    def session(self) -> Any:
        raise AssertionError("the database was touched")


@pytest.mark.parametrize("presented", ["marco_" + "a" * 600, "marco_é", "marco_\x00", ""])
def test_absurd_tokens_do_not_touch_the_database(presented: str) -> None:
    assert tokens.authenticate(NoDatabase(), [presented], presented) is None  # type: ignore[arg-type]


def test_last_used_is_written_at_most_once_a_minute(runtime: Runtime) -> None:
    info, secret = tokens.create(runtime.db, Role.SCIENTIST, "carol")
    assert info.last_used_at is None

    def last_used() -> Any:
        with runtime.db.session() as session:
            return session.scalar(select(ApiToken.last_used_at).where(ApiToken.id == info.id))

    assert tokens.authenticate(runtime.db, [], secret) is not None
    first = last_used()
    assert first is not None
    assert tokens.authenticate(runtime.db, [], secret) is not None
    assert last_used() == first  # within the minute: not written again
    earlier = first - timedelta(minutes=2)
    with runtime.db.session() as session:
        session.execute(update(ApiToken).where(ApiToken.id == info.id).values(last_used_at=earlier))
    assert tokens.authenticate(runtime.db, [], secret) is not None
    assert last_used() > earlier


def test_unknown_role_fails_with_a_clear_message(cli_env: dict[str, str], runtime: Runtime) -> None:
    done = run_cli("tokens", "create", "--role", "wizard", env=cli_env)
    assert done.returncode != 0
    assert "unknown role 'wizard'" in done.stderr
    assert "robot, lims, scientist, admin" in done.stderr
    assert "marco_" not in done.stdout
    assert tokens.list_tokens(runtime.db) == []


@pytest.mark.parametrize("name", ["", "x" * 129, "bad\nname", "tab\there", "12345"])
def test_bad_names_are_refused(runtime: Runtime, name: str) -> None:
    with pytest.raises(ValueError, match="token name"):
        tokens.create(runtime.db, Role.LIMS, name)
    assert tokens.list_tokens(runtime.db) == []


def test_revoke_of_an_unknown_ref_fails(cli_env: dict[str, str], runtime: Runtime) -> None:
    cli_create(cli_env, "lims", "known")
    for ref in ("nobody", "999"):
        done = run_cli("tokens", "revoke", ref, env=cli_env)
        assert done.returncode != 0
        assert "no token with" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    with pytest.raises(LookupError):
        tokens.revoke(runtime.db, "nobody")
    assert [info.revoked for info in tokens.list_tokens(runtime.db)] == [False]
