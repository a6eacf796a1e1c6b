"""schemathesis against the live app, driven by its own OpenAPI document: every operation
gets generated requests (bounded), and every answer must conform to the document (status
codes, content types, response schemas) and never be a server error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from marco_svc import tokens
from marco_svc.api import create_app
from marco_svc.runtime import Runtime
from marco_svc.service import Service
from tests.test_api_resources import seed_scored_plate

pytestmark = [
    pytest.mark.slow,
    # schemathesis's WSGI transport does not close streamed answers (image files), which a
    # real server does; their files are then closed by the garbage collector.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]
EXAMPLES = 15


@pytest.fixture
def live_schema(runtime: Runtime, tmp_path) -> Iterator[tuple[schemathesis.BaseSchema, dict]]:
    seed_scored_plate(runtime, tmp_path)
    _, secret = tokens.create(runtime.db, "admin", "fuzzer")
    service = Service(runtime)
    app = create_app(service)
    yield (
        schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app),
        {"Authorization": f"Bearer {secret}"},
    )
    service.stop()


def _fuzz(operation: Any, auth: dict[str, str]) -> int:
    """Generated requests to one operation; raises the failures schemathesis finds, else
    returns how many requests it made."""
    # A random string cannot be a valid upload manifest (tests/test_uploads.py covers what
    # is accepted); every other check still applies to the upload.
    upload = operation.label == "POST /api/v1/inspections"
    excluded = [positive_data_acceptance] if upload else []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(case=operation.as_strategy())
    def conforms(case: schemathesis.Case) -> None:
        calls.append(case.call_and_validate(headers=auth, excluded_checks=excluded).status_code)

    calls: list[int] = []
    conforms()
    return len(calls)


def test_every_operation_conforms(live_schema) -> None:
    schema, auth = live_schema
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    failures, made = [], {}
    for operation in operations:
        try:
            made[operation.label] = _fuzz(operation, auth)
        except Exception as exc:
            failures.append(f"{operation.label}: {str(exc)[:2000]}")
    assert not failures, "\n\n".join(failures)
    assert all(n >= 1 for n in made.values()) and sum(made.values()) >= 5 * len(operations), made
