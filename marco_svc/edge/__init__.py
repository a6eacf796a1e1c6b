"""The edge agent: scores drop images on the imager PC and forwards the results.

It runs with the core dependencies and the `edge` extra only (LiteRT, no TensorFlow, no
database server, no web framework):

- `outbox`: a local SQLite outbox; every result is stored there before any network call;
- `client`: the HTTP calls to the service (urllib, Bearer token);
- `forwarder`: drains the outbox to `POST /api/v1/edge/results`, with backoff;
- `model_updates`: the model in use (pinned, or fetched from `GET /api/v1/edge/model`);
- `agent`: watches folders, parses paths with the imager adapters, scores with LiteRT;
- `pull`: sends the image files the service asks for (`GET /api/v1/edge/wanted`).
"""

from __future__ import annotations

from pathlib import Path

import platformdirs

# Artifacts the agent runs, most preferred first (never keras: no TensorFlow here).
EDGE_FORMATS = ("tflite-int8", "tflite-fp32", "tflite-fp16")
OUTBOX_FILE = "outbox.sqlite3"
LOG_FILE = "edge.log"
TOKEN_ENV = "MARCO_EDGE_TOKEN"


def default_state_dir() -> Path:
    """`edge` in the per-user data folder the service uses (`marco_svc.config`)."""
    return Path(platformdirs.user_data_dir("marco-svc", appauthor=False)) / "edge"
