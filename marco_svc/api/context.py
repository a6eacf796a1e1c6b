"""Access to the runtime from inside a request."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import current_app
from sqlalchemy.orm import Session

from marco_svc.runtime import Runtime


def runtime() -> Runtime:
    return current_app.extensions["marco"]


@contextmanager
def db_session() -> Iterator[Session]:
    with runtime().db.session() as session:
        yield session
