"""Signed-in browser sessions: the web page signs in with a token once and then holds a
session cookie (HttpOnly, SameSite=Lax, signed with a key kept in the data folder) that
names the token's id, never the token. A revoked token ends its sessions at once. Changes
made with a session (PUT, PATCH, POST) must carry its CSRF token (header X-CSRF-Token, or
form field `csrf`)."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from flask import Flask, request, session

from marco_svc import tokens
from marco_svc.config import Settings
from marco_svc.db.session import Database
from marco_svc.file_store import atomic_write
from marco_svc.tokens import Caller

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
KEY_FILE = "web-session.key"


def session_key(settings: Settings) -> bytes:
    """The key that signs session cookies: made once (0600) in the data folder, so
    sessions survive restarts and every worker process of one service agrees."""
    path: Path = settings.resolved_data_dir / KEY_FILE
    if not path.is_file():
        _create_once(path, secrets.token_bytes(32))
    return path.read_bytes()


def _create_once(path: Path, data: bytes) -> None:
    """Write `path` whole unless it exists: of web workers starting at once on a fresh data
    folder, the first one's key stands and every other one reads it."""
    draft = atomic_write(path.with_name(f".{path.name}.{secrets.token_hex(8)}"), data, mode=0o600)
    try:
        os.link(draft, path)  # refuses to replace: FileExistsError when another was first
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links: last writer wins, as before
        os.replace(draft, path)
    finally:
        draft.unlink(missing_ok=True)


def configure(app: Flask, settings: Settings) -> None:
    app.secret_key = session_key(settings)
    app.config.update(
        SESSION_COOKIE_NAME="marco_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=12 * 3600,
    )


def sign_in(caller: Caller) -> None:
    session.clear()
    session.permanent = True
    session["token_id"] = caller.token_id
    session["csrf"] = secrets.token_urlsafe(32)


def sign_out() -> None:
    session.clear()


def csrf_token() -> str:
    return session.get("csrf", "")


def session_caller(db: Database) -> Caller | None:
    """The caller of this request's session, if it is signed in with a token still valid."""
    token_id = session.get("token_id")
    if not isinstance(token_id, int):
        return None
    caller = tokens.caller_by_id(db, token_id)
    if caller is None:
        session.clear()
    return caller


def csrf_ok() -> bool:
    """Whether a change made with the session carries the session's CSRF token."""
    if request.method in SAFE_METHODS:
        return True
    given = request.headers.get("X-CSRF-Token") or request.form.get("csrf") or ""
    expected = session.get("csrf", "")
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())
