"""Edge agents: an agent on the imager PC scores images with the server's TFLite model and
forwards the results; robot (and admin) tokens.

- `POST /edge/results`: `{"results": [result, ...]}` (1 to 500); each result is stored as an
  ordinary score (image + Score, source "edge") exactly once, by its own idempotency
  `key` (scoped per token): see `marco_svc.edge_results`. Always 200 with one outcome per
  result (stored / duplicate / failed, image id, reason); one bad result never stops the
  others. 422 only for a body that does not match the schema, 413 over 16 MiB.
- `GET /edge/model`: the model that scores now on the server, as the agent should run it:
  its TFLite artifact (int8 preferred, else fp32), checksum, size and card. 404 when that
  model has no TFLite artifact (`marco-svc models export REF --format tflite-int8`).
- `GET /edge/model/file`: that artifact's bytes, `ETag: "<sha256>"`; `If-None-Match`
  with it answers 304. The agent checks the sha256 of what it downloads.
- `GET /edge/wanted?limit=`: image files someone asked for that stay on this agent's
  imager PC (see `marco_svc.edge_wanted`); the agent answers each with
- `PUT /edge/images/{id}/file`: the file's bytes (they must have the image's sha256: 409
  otherwise); the server keeps them and serves the image from now on, or
- `PUT /edge/images/{id}/unavailable`: `{"reason": ...}` when the file is gone or changed
  on the imager PC; the server keeps the reason, stops asking, and readers get it (410).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from functools import wraps
from pathlib import Path
from typing import Any

import marshmallow as ma
from flask import Response, request, send_file
from werkzeug.exceptions import RequestEntityTooLarge

from marco_svc import edge_wanted, registry
from marco_svc.api.access import Permission, current_caller, guarded, may
from marco_svc.api.context import runtime
from marco_svc.api.params import MAX_ID, ApiBlueprint, QueryArgs
from marco_svc.api.problems import Problem, problem_doc
from marco_svc.api.shapes import EdgeFileAnswer, EdgeModelShape, EdgeResultsAnswer, WantedFiles
from marco_svc.edge_results import EdgeResult, store_results
from marco_svc.nets.card import Artifact, CardError

blueprint = ApiBlueprint(
    "edge", __name__, description="Edge agents: results scored on the imager PC, and the model"
)
MAX_RESULTS = 500
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_TEXT = 1024
TFLITE_FORMATS = ("tflite-int8", "tflite-fp32")  # the first the model has is sent
BINARY = {"type": "string", "format": "binary"}


class _Whole(ma.validate.Regexp):
    """A pattern the whole text must match (`re.match` would let `$` pass a final newline)."""

    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ma.ValidationError(self._format_error(value))
        return value


HEX64 = _Whole(r"^[0-9a-fA-F]{64}$", error="expected 64 hexadecimal digits (a sha256)")
REF_PART = _Whole(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", error="letters, digits, '.', '_', '-' (1 to 64)"
)
PRINTABLE_ASCII = _Whole(r"^[\x20-\x7e]+$", error="printable ASCII characters only")


def _text(description: str, **kwargs: Any) -> ma.fields.String:
    return ma.fields.String(
        validate=ma.validate.Length(max=MAX_TEXT), metadata={"description": description}, **kwargs
    )


def _count(description: str) -> ma.fields.Integer:
    return ma.fields.Integer(
        required=True,
        validate=ma.validate.Range(1, MAX_ID),
        metadata={"description": description},
    )


class _Open(ma.Schema):
    """Fields it does not know are ignored (a newer agent may send more)."""

    class Meta:
        unknown = ma.EXCLUDE


class EdgeModelArgs(_Open):
    name = ma.fields.String(required=True, validate=REF_PART)
    version = ma.fields.String(required=True, validate=REF_PART)
    sha256 = ma.fields.String(
        required=True,
        validate=HEX64,
        metadata={"description": "of the model file the agent ran (an artifact of its card)"},
    )


class EdgeResultArgs(_Open):
    key = ma.fields.String(
        required=True,
        validate=[ma.validate.Length(1, 255), PRINTABLE_ASCII],
        metadata={"description": "the agent's idempotency key for this result (per token)"},
    )
    barcode = _text("the plate's barcode", required=True)
    well = _text("e.g. A1", required=True)
    drop = ma.fields.Integer(
        required=True,
        validate=ma.validate.Range(1, MAX_ID),
        metadata={"description": "the drop number in its well (1, 2, ...)"},
    )
    imaged_at = ma.fields.DateTime(
        required=True, metadata={"description": "the inspection's time (UTC if naive)"}
    )
    imager = _text("the imager's name ('' if none)", required=True)
    imaging_mode = _text("visible, uv, sonicc or ir", load_default="visible")
    plate_type = _text("e.g. 96x2 (wells x drops per well)", load_default=None, allow_none=True)
    path = ma.fields.String(
        required=True,
        validate=ma.validate.Length(1, MAX_TEXT),
        metadata={"description": "the image file's path on the imager PC"},
    )
    sha256 = ma.fields.String(
        required=True, validate=HEX64, metadata={"description": "of the image file"}
    )
    size_bytes = _count("of the image file")
    width = _count("pixels")
    height = _count("pixels")
    model = ma.fields.Nested(EdgeModelArgs, required=True)
    probabilities = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.Float(validate=ma.validate.Range(0, 1)),
        required=True,
        metadata={"description": "label -> probability, every label of the model"},
    )
    top_class = ma.fields.String(
        required=True,
        validate=ma.validate.Length(1, 64),
        metadata={"description": "the most probable label of the finest head"},
    )
    latency_ms = ma.fields.Float(
        required=True,
        validate=ma.validate.Range(min=0),
        metadata={"description": "how long scoring this image took on the imager PC"},
    )
    quality = ma.fields.Dict(
        load_default=dict, metadata={"description": "quality flags (as the server's scores)"}
    )


class EdgeResultsArgs(_Open):
    results = ma.fields.List(
        ma.fields.Nested(EdgeResultArgs),
        required=True,
        validate=ma.validate.Length(1, MAX_RESULTS),
    )


def _body_limit(view: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse a body over MAX_BODY_BYTES before it is read (413)."""

    @wraps(view)
    def limited(*args: Any, **kwargs: Any) -> Any:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise Problem(
                413,
                "Request too large",
                f"the request has {request.content_length} bytes; the limit is "
                f"{MAX_BODY_BYTES}: send fewer results at a time",
            )
        request.max_content_length = MAX_BODY_BYTES
        return view(*args, **kwargs)

    return limited


@blueprint.route("/edge/results", methods=["POST"])
@guarded(blueprint, Permission.UPLOAD)
@_body_limit
@blueprint.arguments(EdgeResultsArgs)
@blueprint.response(200, EdgeResultsAnswer, description="one outcome per result, in order")
@blueprint.alt_response(413, **problem_doc(f"the body is over {MAX_BODY_BYTES} bytes"))
def edge_results(args: dict) -> dict:
    """Results the edge agent scored on the imager PC: each is stored as an ordinary score
    once (its `key` makes a re-send safe; keys are scoped per token). Outcomes: `stored`,
    `duplicate` (sent before, or that image already has this model's score), `failed`
    (with its reason; nothing remembered, so the same key may be sent again)."""
    results = [EdgeResult.from_dict(item) for item in args["results"]]
    outcomes = store_results(runtime(), current_caller().scope, results)
    return {"results": [asdict(outcome) for outcome in outcomes]}


def _edge_model() -> tuple[registry.StoredModel, str, Artifact, Path]:
    """The model that scores now, its TFLite format, artifact and file; else 404."""
    rt = runtime()
    try:
        model = registry.resolve(rt.settings, db=rt.db)
    except (registry.ModelStoreError, CardError):
        raise Problem(404, "No model", "no model scores on this server") from None
    fmt = next((f for f in TFLITE_FORMATS if f in model.card.artifacts), None)
    if fmt is None:
        raise Problem(
            404,
            "No TFLite model",
            f"{model.ref} has no {' or '.join(TFLITE_FORMATS)} artifact; an admin adds one "
            f"with `marco-svc models export {model.ref} --format tflite-int8`",
        )
    artifact = model.card.artifacts[fmt]
    path = model.folder / artifact.file
    if not path.is_file():
        raise Problem(404, "No TFLite model", f"{model.ref}: its {fmt} file is missing")
    return model, fmt, artifact, path


@blueprint.route("/edge/model")
@guarded(blueprint, Permission.UPLOAD)
@blueprint.response(200, EdgeModelShape)
@blueprint.alt_response(404, **problem_doc("no model scores, or it has no TFLite artifact"))
def edge_model() -> dict:
    """The model that scores now on the server, as the edge agent should run it: its TFLite
    artifact (int8 preferred, else fp32) with checksum, size and model card."""
    model, fmt, artifact, path = _edge_model()
    return {
        "ref": model.ref,
        "name": model.card.name,
        "version": model.card.version,
        "format": fmt,
        "sha256": artifact.sha256,
        "size": path.stat().st_size,
        "card": model.card.to_dict(),
    }


@blueprint.route("/edge/model/file")
@guarded(blueprint, Permission.UPLOAD)
@blueprint.response(
    200, BINARY, content_type="application/octet-stream", description="the TFLite file"
)
@blueprint.alt_response(304, description="If-None-Match names this file's ETag")
@blueprint.alt_response(404, **problem_doc("no model scores, or it has no TFLite artifact"))
def edge_model_file() -> Response:
    """The file of `GET /edge/model` (`ETag: "<sha256>"`; `If-None-Match`: 304)."""
    _, _, artifact, path = _edge_model()
    etag = artifact.sha256
    if request.if_none_match.contains_weak(etag):
        answer = Response(status=304)
    else:
        answer = send_file(path, mimetype="application/octet-stream", conditional=False, etag=False)
    answer.set_etag(etag)
    answer.headers["Cache-Control"] = "no-cache"
    return answer


# -- files the server asks back ---------------------------------------------------------------

MAX_WANTED = 100
NO_CONTROLS = _Whole(r"^[^\x00-\x1f\x7f]+$", error="no control characters")


class WantedArgs(QueryArgs):
    limit = ma.fields.Integer(
        load_default=10,
        validate=ma.validate.Range(1, MAX_WANTED),
        metadata={"description": "at most this many files"},
    )


class UnavailableArgs(_Open):
    reason = ma.fields.String(
        required=True,
        validate=[ma.validate.Length(1, edge_wanted.MAX_REASON), NO_CONTROLS],
        metadata={"description": "why the file cannot come (readers are told this)"},
    )


FILE_BODY = {
    "required": True,
    "description": "the image file's bytes",
    "content": {"application/octet-stream": {"schema": BINARY}},
}


@blueprint.route("/edge/wanted")
@guarded(blueprint, Permission.UPLOAD)
@blueprint.arguments(WantedArgs, location="query")
@blueprint.response(200, WantedFiles)
def edge_wanted_files(args: dict) -> dict:
    """Image files someone asked for that stay on this agent's imager PC (those sent with
    this token), least recently offered first. Send each with `PUT /edge/images/{id}/file`,
    or say why not with `PUT /edge/images/{id}/unavailable`."""
    files = edge_wanted.wanted(runtime().db, current_caller().scope, args["limit"])
    return {"images": [asdict(found) for found in files]}


def _file_body() -> bytes:
    """The request body, at most `max_image_bytes` (413 beyond, before it is read)."""
    limit = runtime().settings.max_image_bytes
    too_large = Problem(
        413, "File too large", f"the server takes image files of at most {limit} bytes"
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    request.max_content_length = limit
    try:
        return request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise too_large from None


@blueprint.route("/edge/images/<id:image_id>/file", methods=["PUT"])
@guarded(blueprint, Permission.UPLOAD)
@blueprint.doc(requestBody=FILE_BODY)
@blueprint.response(200, EdgeFileAnswer)
@blueprint.alt_response(404, **problem_doc("no such image, or its file was never on an imager"))
@blueprint.alt_response(409, **problem_doc("the bytes have another sha256 than the image"))
@blueprint.alt_response(413, **problem_doc("larger than max_image_bytes"))
@blueprint.alt_response(422, **problem_doc("the bytes are not an image the server takes"))
def edge_image_file(image_id: int) -> dict:
    """The file of an edge image, sent by the agent that holds it: kept by the server (as
    an upload's file, through the same ingest) and served from now on; the image and its
    scores stay as they are."""
    data = _file_body()
    try:
        received = edge_wanted.receive(runtime(), image_id, data)
    except edge_wanted.NotEdgeImage as exc:
        raise Problem(404, "Not an edge image", str(exc)) from None
    except edge_wanted.FileMismatch as exc:
        raise Problem(409, "Not this image's file", str(exc)) from None
    except edge_wanted.NotAnImage as exc:
        raise Problem(422, "Not an image", str(exc)) from None
    return asdict(received)


@blueprint.route("/edge/images/<id:image_id>/unavailable", methods=["PUT"])
@guarded(blueprint, Permission.UPLOAD)
@blueprint.arguments(UnavailableArgs)
@blueprint.response(200, EdgeFileAnswer)
@blueprint.alt_response(404, **problem_doc("no such image, or its file was never on an imager"))
def edge_image_unavailable(args: dict, image_id: int) -> dict:
    """The agent cannot send this file (deleted, moved or changed on the imager PC): the
    server keeps the reason, stops asking, and answers readers 410 with it."""
    caller = current_caller()
    try:
        outcome = edge_wanted.give_up(
            runtime().db, image_id, caller.scope, args["reason"], may(Permission.ADMIN)
        )
    except edge_wanted.NotEdgeImage as exc:
        raise Problem(404, "Not an edge image", str(exc)) from None
    except edge_wanted.NotYours as exc:
        raise Problem(403, "Forbidden", str(exc)) from None
    return {"image_id": image_id, "outcome": outcome}
