"""Errors as RFC 9457 problem documents (application/problem+json), for our own `Problem`,
for werkzeug's HTTP errors (405 keeps its `Allow`) and for flask-smorest's validation
errors (422 with the fields at fault)."""

from __future__ import annotations

import logging
from typing import Any

import marshmallow as ma
from flask import Flask, Response, json
from flask_smorest import Api
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """Raise to answer with a problem document (`headers`: extra response headers)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail, self.extra = status, title, detail, extra
        self.headers = headers or {}


class ProblemSchema(ma.Schema):
    """An RFC 9457 problem document (documentation only; answers are built by hand)."""

    type = ma.fields.String(required=True)
    title = ma.fields.String(required=True)
    status = ma.fields.Integer(required=True)
    detail = ma.fields.String()
    errors = ma.fields.Dict(metadata={"description": "the request fields at fault"})


def problem_response(
    status: int, title: str, detail: str = "", headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    body = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    response.headers.update(headers or {})
    return response


def problem_doc(description: str) -> dict[str, Any]:
    """How an alternative (error) response is documented: a problem document."""
    return {"schema": ProblemSchema, "content_type": PROBLEM_JSON, "description": description}


class ProblemApi(Api):
    """flask-smorest's Api answering every HTTP error as a problem document (and saying so
    in the OpenAPI document)."""

    ERROR_SCHEMA = ProblemSchema

    def _register_responses(self) -> None:
        self.DEFAULT_RESPONSE_CONTENT_TYPE = PROBLEM_JSON  # the error responses it registers
        try:
            super()._register_responses()
        finally:
            del self.DEFAULT_RESPONSE_CONTENT_TYPE

    def handle_http_exception(self, error: HTTPException) -> Response:
        data = getattr(error, "data", None) or {}
        extra: dict[str, Any] = {}
        if "messages" in data:  # webargs: the fields that failed validation
            extra["errors"] = data["messages"]
        headers = dict(data.get("headers") or {})
        allowed = getattr(error, "valid_methods", None)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
        status = error.code or 500
        if status >= 500:
            log.error("%s %s", status, error.description)
        title = "Invalid request" if extra else error.name
        detail = data.get("message") or (
            "see errors" if extra else (error.description if status < 500 else "")
        )
        return problem_response(status, title, detail, headers=headers, **extra)


def register(app: Flask) -> None:
    @app.errorhandler(Problem)
    def _problem(exc: Problem) -> Response:
        return problem_response(exc.status, exc.title, exc.detail, exc.headers, **exc.extra)
