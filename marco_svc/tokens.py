"""API tokens as a use case: create, list, revoke, authenticate (shared by CLI and REST API).

A stored token is "marco_" plus 32 random bytes (URL-safe base64); the database keeps only
its SHA-256, so the secret is shown once, at creation. Tokens from the `api_tokens` setting
keep working and act as role robot.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from marco_svc.db.models import ApiToken, utcnow
from marco_svc.db.session import Database

log = logging.getLogger(__name__)

TOKEN_PREFIX = "marco_"
MAX_PRESENTED_CHARS = 512
MAX_NAME_CHARS = 128
# last_used_at is written at most this often per token (not on every request).
TOUCH_INTERVAL = timedelta(minutes=1)
SETTING_NAME = "api_tokens setting"


class Role(StrEnum):
    ROBOT = "robot"
    LIMS = "lims"
    SCIENTIST = "scientist"
    ADMIN = "admin"


ROLE_NAMES = ", ".join(role.value for role in Role)


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the token's name and role, and the scope its idempotency keys
    live in ("token:<id>" for a stored token, "setting:<sha256 prefix>" for a configured one).
    """

    name: str
    role: Role
    token_id: int | None
    scope: str


@dataclass(frozen=True)
class TokenInfo:
    """A stored token without its secret."""

    id: int
    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role.value,
            "created_at": _iso(self.created_at),
            "last_used_at": _iso(self.last_used_at),
            "revoked_at": _iso(self.revoked_at),
            "revoked": self.revoked,
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _info(row: ApiToken) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        name=row.name,
        role=Role(row.role),
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def parse_role(role: Role | str) -> Role:
    """The role, or ValueError naming the roles there are."""
    try:
        return Role(role)
    except ValueError:
        raise ValueError(f"unknown role {role!r} (roles: {ROLE_NAMES})") from None


def check_name(name: str) -> str:
    """A token name: 1..128 printable characters, not only digits (digits mean an id)."""
    if not name or not name.strip():
        raise ValueError("a token name must not be empty")
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(f"a token name has at most {MAX_NAME_CHARS} characters")
    if not name.isprintable():
        raise ValueError(f"a token name must be printable characters only: {name!r}")
    if name.isdigit():
        raise ValueError(f"a token name must not be only digits (that reads as an id): {name!r}")
    return name


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _default_name(session: Session, role: Role) -> str:
    """A name like "lims-3": one more than the tokens of that role so far, not yet used."""
    taken = set(session.scalars(select(ApiToken.name).where(ApiToken.role == role.value)))
    n = len(taken) + 1
    while f"{role.value}-{n}" in taken:
        n += 1
    return f"{role.value}-{n}"


def create(db: Database, role: Role | str, name: str | None = None) -> tuple[TokenInfo, str]:
    """A new token with `role`: its description, and the secret (shown only this once).

    Only the SHA-256 of the secret is stored. A slow password hash (bcrypt, argon2) guards
    low-entropy secrets against guessing; a 256-bit random token cannot be guessed, so a
    plain SHA-256 is as safe and lets a request be checked with one indexed lookup.
    """
    chosen = parse_role(role)
    if name is not None:
        name = check_name(name)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.session() as session:
        row = ApiToken(
            name=name if name is not None else _default_name(session, chosen),
            role=chosen.value,
            token_sha256=token_sha256(secret),
            created_at=utcnow(),
        )
        session.add(row)
        session.flush()
        info = _info(row)
    log.info("created API token %d %r (role %s)", info.id, info.name, info.role)
    return info, secret


def list_tokens(db: Database) -> list[TokenInfo]:
    """Every stored token in id order, revoked ones included (TokenInfo.revoked)."""
    with db.session() as session:
        rows = session.scalars(select(ApiToken).order_by(ApiToken.id)).all()
        return [_info(row) for row in rows]


def revoke(db: Database, ref: str) -> list[TokenInfo]:
    """Revoke every active token whose id (`ref` all digits) or name is `ref`.

    LookupError when no active token matches.
    """
    ref = ref.strip()
    match = ApiToken.id == int(ref) if ref.isdigit() else ApiToken.name == ref
    what = f"id {ref}" if ref.isdigit() else f"name {ref!r}"
    now = utcnow()
    with db.session() as session:
        rows = session.scalars(select(ApiToken).where(match).order_by(ApiToken.id)).all()
        active = [row for row in rows if row.revoked_at is None]
        if not active:
            if rows:
                raise LookupError(f"the token with {what} is already revoked")
            raise LookupError(f"no token with {what} (see `marco-svc tokens list`)")
        for row in active:
            row.revoked_at = now
        session.flush()
        revoked = [_info(row) for row in active]
    for info in revoked:
        log.info("revoked API token %d %r", info.id, info.name)
    return revoked


def _plausible(presented: str) -> bool:
    """Whether a presented string could be a token at all (else no lookup is made)."""
    return (
        isinstance(presented, str)
        and 0 < len(presented) <= MAX_PRESENTED_CHARS
        and presented.isascii()
        and presented.isprintable()
    )


def _configured_caller(configured: Sequence[str], presented: str) -> Caller | None:
    given = presented.encode("ascii")
    found: str | None = None
    for token in configured:  # every entry is compared: no early exit on a match
        if token and hmac.compare_digest(token.encode("utf-8"), given):
            found = token
    if found is None:
        return None
    scope = f"setting:{token_sha256(found)[:16]}"
    return Caller(name=SETTING_NAME, role=Role.ROBOT, token_id=None, scope=scope)


def authenticate(db: Database, configured: Sequence[str], presented: str) -> Caller | None:
    """The caller that `presented` identifies, or None (unknown, revoked, or absurd).

    Tokens of the `api_tokens` setting (`configured`) are role robot; otherwise the SHA-256
    of `presented` is looked up among stored tokens that are not revoked. last_used_at is
    written at most once a minute per token.
    """
    if not _plausible(presented):
        return None
    caller = _configured_caller(configured, presented)
    if caller is not None:
        return caller
    return _stored_caller(db, ApiToken.token_sha256 == token_sha256(presented))


def caller_by_id(db: Database, token_id: int) -> Caller | None:
    """The caller of stored token `token_id` (a signed-in web session holds only the id),
    or None once it is revoked."""
    return _stored_caller(db, ApiToken.id == token_id)


def _stored_caller(db: Database, which: Any) -> Caller | None:
    with db.session() as session:
        row = session.scalars(select(ApiToken).where(which, ApiToken.revoked_at.is_(None))).first()
        if row is None:
            return None
        token_id, name, role_text, last_used = row.id, row.name, row.role, row.last_used_at
    try:
        role = Role(role_text)
    except ValueError:
        log.warning("API token %d has unknown role %r: refused", token_id, role_text)
        return None
    now = utcnow()
    if last_used is None or now - last_used >= TOUCH_INTERVAL:
        _touch(db, token_id, now)
    return Caller(name=name, role=role, token_id=token_id, scope=f"token:{token_id}")


def _touch(db: Database, token_id: int, now: datetime) -> None:
    """Record use; conditional, so concurrent requests write once. Best effort: a busy
    database must not turn a valid token away."""
    try:
        with db.session() as session:
            session.execute(
                update(ApiToken)
                .where(
                    ApiToken.id == token_id,
                    or_(
                        ApiToken.last_used_at.is_(None),
                        ApiToken.last_used_at <= now - TOUCH_INTERVAL,
                    ),
                )
                .values(last_used_at=now)
            )
    except OperationalError as exc:
        log.warning("could not record use of API token %d: %s", token_id, exc)
