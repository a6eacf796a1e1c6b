"""Access to the service and its runtime from inside a request."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import current_app
from sqlalchemy.orm import Session

from marco_svc.runtime import Runtime
from marco_svc.service import Service


def service() -> Service:
    return current_app.extensions["marco"]


def runtime() -> Runtime:
    return service().runtime


@contextmanager
def db_session() -> Iterator[Session]:
    with runtime().db.session() as session:
        yield session
