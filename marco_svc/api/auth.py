"""Write access to the API: `Authorization: Bearer <token>`, tokens from the setting api_tokens."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import request

from marco_svc.api.context import runtime
from marco_svc.api.problems import Problem


def require_token() -> None:
    """Raise a problem unless the request carries one of the configured tokens."""
    tokens = runtime().settings.api_tokens
    if not tokens:
        raise Problem(
            403,
            "Writes disabled",
            "this service accepts no writes: no API token is configured "
            "(setting api_tokens, environment MARCO_API_TOKENS)",
        )
    scheme, _, given = (request.headers.get("Authorization") or "").partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        raise Problem(
            401,
            "Authentication required",
            "send Authorization: Bearer <token>",
            headers={"WWW-Authenticate": 'Bearer realm="marco-svc"'},
        )
    if not any(hmac.compare_digest(given.encode(), token.encode()) for token in tokens):
        raise Problem(
            401,
            "Invalid token",
            "the bearer token is not one of the configured api_tokens",
            headers={"WWW-Authenticate": 'Bearer realm="marco-svc", error="invalid_token"'},
        )


def write_access(view: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a view that changes stored data."""

    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        require_token()
        return view(*args, **kwargs)

    return guarded
