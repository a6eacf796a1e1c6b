"""Who may do what: every endpoint but /healthz and the OpenAPI document needs a bearer
token, and the token's role must grant the endpoint's permission.

Roles (marco_svc.tokens.Role): robot uploads; lims reads; scientist reads and labels;
admin does everything, models and tokens included. The token is checked before a
request body is read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from functools import wraps
from typing import Any

from flask import g, request

from marco_svc import tokens
from marco_svc.api import sessions
from marco_svc.api.context import runtime
from marco_svc.api.params import ApiBlueprint
from marco_svc.api.problems import Problem, problem_doc
from marco_svc.tokens import Caller, Role


class Permission(StrEnum):
    READ = "read"  # plates, images, files, heatmaps, scores, feeds, models, metrics
    LABEL = "label"  # human scores
    UPLOAD = "upload"  # robot inspections
    ADMIN = "admin"  # activate models, see server paths


GRANTS: Mapping[Role, frozenset[Permission]] = {
    Role.ROBOT: frozenset({Permission.UPLOAD}),
    Role.LIMS: frozenset({Permission.READ}),
    Role.SCIENTIST: frozenset({Permission.READ, Permission.LABEL}),
    Role.ADMIN: frozenset(Permission),
}
MAX_TOKEN_CHARS = 512
CHALLENGE = 'Bearer realm="marco-svc"'


def _presented() -> str:
    scheme, _, given = (request.headers.get("Authorization") or "").partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        raise Problem(
            401,
            "Authentication required",
            "send Authorization: Bearer <token> (marco-svc tokens create --role ROLE)",
            headers={"WWW-Authenticate": CHALLENGE},
        )
    return given


def current_caller() -> Caller:
    """The caller of this request, authenticated once: a bearer token, else a signed-in
    session (whose changes need its CSRF token); 401 without either."""
    found = g.get("caller")
    if found is not None:
        return found
    rt = runtime()
    if "Authorization" not in request.headers and (found := sessions.session_caller(rt.db)):
        if not sessions.csrf_ok():
            raise Problem(403, "CSRF token missing", "send the page's X-CSRF-Token header")
        g.caller = found
        return found
    found = tokens.authenticate(rt.db, rt.settings.api_tokens, _presented())
    if found is None:
        raise Problem(
            401,
            "Invalid token",
            "the bearer token is unknown or revoked",
            headers={"WWW-Authenticate": f'{CHALLENGE}, error="invalid_token"'},
        )
    g.caller = found
    return found


def may(permission: Permission) -> bool:
    """Whether this request's caller (if any valid token came) has `permission`."""
    try:
        return permission in GRANTS[current_caller().role]
    except Problem:
        return False


def require(permission: Permission) -> Caller:
    caller = current_caller()
    if permission not in GRANTS[caller.role]:
        allowed = ", ".join(role for role, granted in GRANTS.items() if permission in granted)
        raise Problem(
            403,
            "Forbidden",
            f"a {caller.role} token may not {permission}; roles that may: {allowed}",
        )
    return caller


def guarded(blueprint: ApiBlueprint, permission: Permission) -> Callable[[Any], Any]:
    """Decorate a view: require `permission`, and document the token and the 401/403."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            require(permission)
            return view(*args, **kwargs)

        checked = blueprint.doc(security=[{"bearer": []}])(checked)
        checked = blueprint.alt_response(
            401, **problem_doc("no token, or an unknown or revoked one")
        )(checked)
        return blueprint.alt_response(403, **problem_doc(f"the token's role may not {permission}"))(
            checked
        )

    return decorate
