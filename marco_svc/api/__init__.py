"""The Flask application factory: a service (settings, database, background parts),
blueprints and JSON problem errors."""

from __future__ import annotations

from typing import Any

from flask import Flask

from marco_svc.api import health, problems, scores, uploads, v1
from marco_svc.runtime import open_runtime
from marco_svc.service import Service


def create_app(service: Service | None = None, test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app over a service (a bare one over the configured runtime when not given)."""
    service = service or Service(open_runtime())
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=None,
        JSON_SORT_KEYS=False,
    )
    if test_config:
        app.config.update(test_config)
    app.extensions["marco"] = service
    problems.register(app)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(v1.blueprint, url_prefix="/api/v1")
    app.register_blueprint(uploads.blueprint, url_prefix="/api/v1")
    app.register_blueprint(scores.blueprint, url_prefix="/api/v1")

    @app.after_request
    def _no_sniffing(response: Any) -> Any:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    return app
