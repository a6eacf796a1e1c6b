"""The Flask application factory: a service (settings, database, background parts), the
REST API under /api/v1 (flask-smorest: arguments validated, answers dumped through their
schemas, the OpenAPI 3.1 document generated from both), problem-document errors and
Prometheus metrics."""

from __future__ import annotations

from typing import Any

from flask import Flask

from marco_svc import __version__, web
from marco_svc.api import (
    edge,
    feeds,
    health,
    images,
    metrics,
    models,
    plates,
    problems,
    schemes,
    sessions,
    uploads,
)
from marco_svc.api.params import BarcodeConverter, IdConverter, register_converters
from marco_svc.runtime import open_runtime
from marco_svc.service import Service

API_PREFIX = "/api/v1"
RESOURCES = (plates, images, feeds, models, schemes, uploads, edge)


def create_app(service: Service | None = None, test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app over a service (a bare one over the configured runtime when not given)."""
    service = service or Service(open_runtime())
    app = Flask(__name__, static_folder=None)  # the web page serves its own
    app.config.update(
        MAX_CONTENT_LENGTH=None,
        JSON_SORT_KEYS=False,
        API_TITLE="marco-svc",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX=API_PREFIX,
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "info": {
                "description": "Scores of crystallization drop images, for LIMS and robots. "
                "Every endpoint but /healthz and this document needs a bearer token."
            },
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        },
    )
    if test_config:
        app.config.update(test_config)
    app.url_map.converters.update(id=IdConverter, barcode=BarcodeConverter)
    app.extensions["marco"] = service
    api = problems.ProblemApi(app)
    register_converters(api)
    problems.register(app)
    app.extensions["marco-metrics"] = metrics.Metrics(app, service)
    app.register_blueprint(health.blueprint)
    for resource in RESOURCES:
        api.register_blueprint(resource.blueprint, url_prefix=API_PREFIX)
    api.register_blueprint(metrics.blueprint)
    sessions.configure(app, service.runtime.settings)
    web.register(app)

    @app.after_request
    def _no_sniffing(response: Any) -> Any:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    return app
