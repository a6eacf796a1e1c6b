"""WSGI entry for gunicorn (`gunicorn -c deploy/gunicorn.conf.py marco_svc.wsgi:application`).

A web process only serves: no watcher, no background scorer. The watcher
(`marco-svc watch`) and the scorers (the Celery workers, `marco-svc worker`, or the
watcher's own scorer without a broker) run as their own processes, so N web workers
never score or watch N times over. Images uploaded here go on the runtime's scoring
queue; the database (`status = new`) stays the truth a scorer sweeps.

The schema is not migrated here (`upgrade=False`: a database behind the code is refused):
`marco-svc db upgrade` runs once before the web processes start (systemd ExecStartPre,
the compose `migrate` service), never in several workers at once.

gunicorn imports this module in each worker after the fork (`preload_app = False`), so
each worker opens its own database pool and, for heatmaps, its own TensorFlow.
"""

from __future__ import annotations

import gc
import logging

from flask import Flask

from marco_svc.api import create_app
from marco_svc.config import load_settings
from marco_svc.runtime import open_runtime
from marco_svc.service import Service


def build() -> tuple[Flask, Service]:
    """The app over a serve-only service (heatmap pool started), from the settings."""
    settings = load_settings()
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level > logging.DEBUG:  # as the CLI: alembic's "Context impl" lines only when debugging
        logging.getLogger("alembic").setLevel(logging.WARNING)
    service = Service(open_runtime(settings, upgrade=False))
    app = create_app(service)
    service.start()
    return app, service


application, service = build()
# What start-up loaded stays for good: keep it out of the collector's full passes (as serve).
gc.freeze()
