"""GET /healthz (no token): the service answers, its database is reachable, its watcher (if
any) runs and its work loop keeps coming round (a heartbeat). The watched folders are shown
to admin tokens only."""

from __future__ import annotations

from flask import Blueprint
from sqlalchemy import text

from marco_svc import __version__
from marco_svc.api.access import Permission, may
from marco_svc.api.context import db_session, runtime, service
from marco_svc.api.problems import problem_response
from marco_svc.db import migrate
from marco_svc.errors import first_line

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz():
    try:
        with db_session() as session:
            session.execute(text("SELECT 1"))
        revision = migrate.current_revision(runtime().db.engine)
    except Exception as exc:
        return problem_response(503, "Database unavailable", first_line(exc))
    body = {
        "status": "ok",
        "version": __version__,
        "database": runtime().db.url.get_backend_name(),
        "schema": revision,
    }
    parts = service().status()
    if "watcher" in parts and not may(Permission.ADMIN):
        parts["watcher"] = {k: v for k, v in parts["watcher"].items() if k != "roots"}
    trouble = service().trouble()
    if trouble is not None:
        return problem_response(503, trouble.title, trouble.detail, **parts)
    return {**body, **parts}


@blueprint.get("/api/v1")
def index():
    """Where to go from here (public: it names no data); people start at `/`."""
    return {
        "service": "marco-svc",
        "version": __version__,
        "links": {
            "web page": "/",
            "health": "/healthz",
            "openapi": "/api/v1/openapi.json",
            "plates": "/api/v1/plates",
            "images": "/api/v1/images",
            "failed images": "/api/v1/images?status=failed",
            "hits (LIMS feed)": "/api/v1/hits?since=0",
            "scores (LIMS feed)": "/api/v1/scores?since=0",
            "robot upload": "POST /api/v1/inspections",
        },
        "auth": "Authorization: Bearer <token> (marco-svc tokens create --role ROLE)",
    }
