"""The web page for scientists: server-rendered Jinja templates and a little plain
JavaScript (no build step), served by the same Flask app as the API."""

from __future__ import annotations

from flask import Flask

from marco_svc.web import pages


def register(app: Flask) -> None:
    app.register_blueprint(pages.blueprint)
