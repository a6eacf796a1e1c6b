"""GET /healthz: the service answers, its database is reachable, its watcher (if any) runs
and its work loop keeps coming round (a heartbeat)."""

from __future__ import annotations

from flask import Blueprint, current_app
from sqlalchemy import text

from marco_svc import __version__
from marco_svc.api.context import db_session, runtime
from marco_svc.api.problems import problem_response
from marco_svc.db import migrate

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz():
    try:
        with db_session() as session:
            session.execute(text("SELECT 1"))
        revision = migrate.current_revision(runtime().db.engine)
    except Exception as exc:
        return problem_response(503, "Database unavailable", str(exc).splitlines()[0])
    body = {
        "status": "ok",
        "version": __version__,
        "database": runtime().db.url.get_backend_name(),
        "schema": revision,
    }
    scorer = current_app.extensions.get("marco_scorer")
    if scorer is not None:
        body["scorer"] = scorer.status()
    watcher = current_app.extensions.get("marco_watcher")
    if watcher is not None:
        stuck = watcher.stuck_for()
        body["watcher"] = {
            "alive": watcher.alive(),
            "stuck_seconds": round(stuck, 1),
            "roots": watcher.roots,
            "counts": dict(watcher.stats),
        }
        if stuck:
            detail = f"the watcher's work loop is stuck: no turn for {stuck:.0f} s"
            return problem_response(503, "Watcher stuck", detail, watcher=body["watcher"])
        if not watcher.alive():
            return problem_response(
                503, "Watcher stopped", "file events are not processed", watcher=body["watcher"]
            )
    return body


@blueprint.get("/")
def index():
    """Where to go from here."""
    return {
        "service": "marco-svc",
        "version": __version__,
        "links": {
            "health": "/healthz",
            "plates": "/api/v1/plates",
            "images": "/api/v1/images",
            "failed images": "/api/v1/images?status=failed",
            "hits (LIMS feed)": "/api/v1/hits?since=0",
            "robot upload": "POST /api/v1/inspections",
        },
    }
