"""Request parameters shared by the resources: bounded ids and barcodes in paths, and the
`limit` and cursor of every list that can grow (out of range: 404 in a path, 422 in a query)."""

from __future__ import annotations

import json
import re
from typing import Any

import flask_smorest
import marshmallow as ma
from flask_smorest import Api
from webargs.flaskparser import FlaskParser, abort
from werkzeug.routing import BaseConverter, IntegerConverter, ValidationError

MAX_ID = 2**31 - 1  # row ids are 32-bit integers on PostgreSQL
MAX_POSITION = 2**63 - 1  # feed positions are 64-bit
MAX_LIMIT = 1000
MAX_TEXT = 128
_UNSAFE = re.compile(r"[\x00-\x1f\x7f<>&\"'`\\]")


class _SafeJsonParser(FlaskParser):
    """webargs' parser, answering 422 (not 500) for JSON nested too deeply or holding an
    integer of over 4,300 digits."""

    def _raw_load_json(self, req: Any) -> Any:
        try:
            return super()._raw_load_json(req)
        except RecursionError:
            abort(422, messages={"json": ["nested too deeply"]})
        except ValueError as exc:
            if isinstance(exc, (UnicodeDecodeError, json.JSONDecodeError)):
                raise  # webargs answers these: 400 Invalid JSON body
            abort(422, messages={"json": [str(exc).split(";")[0]]})


class ApiBlueprint(flask_smorest.Blueprint):
    """The resources' blueprint: flask-smorest's, with the hardened JSON parser."""

    ARGUMENTS_PARSER = _SafeJsonParser()


class IdConverter(IntegerConverter):
    """A row id in a path: 1..2**31-1 (else the URL matches nothing: 404)."""

    def __init__(self, url_map: Any) -> None:
        super().__init__(url_map, min=1, max=MAX_ID)

    def to_python(self, value: str) -> int:
        if len(value) > 10:
            raise ValidationError()
        return super().to_python(value)


class BarcodeConverter(BaseConverter):
    """A plate barcode in a path: 1..128 characters, no control characters or markup."""

    def to_python(self, value: str) -> str:
        if not 0 < len(value) <= MAX_TEXT or _UNSAFE.search(value):
            raise ValidationError()
        return value


def register_converters(api: Api) -> None:
    api.register_converter(
        IdConverter, lambda _: {"type": "integer", "minimum": 1, "maximum": MAX_ID}
    )
    api.register_converter(
        BarcodeConverter,
        lambda _: {"type": "string", "minLength": 1, "maxLength": MAX_TEXT, "pattern": r"^[^/]+$"},
    )


SAFE_TEXT = ma.validate.Regexp(
    r"^[^\x00-\x1f\x7f<>&\"'`\\]*$",
    error="must not contain control characters, quotes or < > & \\ `",
)


def text_field(**kwargs: Any) -> ma.fields.String:
    """A short query text: 1..128 characters, no control characters or markup."""
    return ma.fields.String(validate=[ma.validate.Length(1, MAX_TEXT), SAFE_TEXT], **kwargs)


_REF_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"


def model_field(description: str) -> ma.fields.String:
    """A model reference: NAME or NAME:VERSION (as marco_svc.registry spells them)."""
    return ma.fields.String(
        validate=ma.validate.Regexp(
            rf"^{_REF_PART}(:{_REF_PART})?$", error="expected NAME or NAME:VERSION"
        ),
        metadata={"description": description},
    )


class QueryArgs(ma.Schema):
    """Query parameters: ones it does not know are ignored (a client may add its own)."""

    class Meta:
        unknown = ma.EXCLUDE


class PageArgs(QueryArgs):
    """One page of a list: at most `limit` items after `cursor` (the last answer's `next`)."""

    limit = ma.fields.Integer(
        load_default=100, validate=ma.validate.Range(1, MAX_LIMIT), metadata={"example": 100}
    )
    cursor = ma.fields.Integer(
        validate=ma.validate.Range(0, MAX_ID),
        metadata={"description": "the previous page's `next`; omit for the first page"},
    )


class FeedArgs(QueryArgs):
    """A feed poll: what committed after `since` (the previous answer's `next`)."""

    since = ma.fields.Integer(
        load_default=0,
        validate=ma.validate.Range(0, MAX_POSITION),
        metadata={"description": "the previous answer's `next`; 0: from the beginning"},
    )
    limit = ma.fields.Integer(load_default=500, validate=ma.validate.Range(1, MAX_LIMIT))


def cursor_value(value: int | None) -> int:
    return value or 0
