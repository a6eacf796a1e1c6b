"""Images: the list, one image with every score and human label, its file, its SmoothGrad
heatmap, and people's labels (PUT one's own, PATCH a correction, the feed of changes)."""

from __future__ import annotations

import marshmallow as ma
from flask import Response, send_file

from marco_svc import edge_wanted, human_scores, listing, queries
from marco_svc.api.access import Permission, current_caller, guarded, may
from marco_svc.api.context import db_session, runtime, service
from marco_svc.api.models import scoring_version_id, version_id_of
from marco_svc.api.params import (
    ApiBlueprint,
    FeedArgs,
    PageArgs,
    QueryArgs,
    cursor_value,
    model_field,
    text_field,
)
from marco_svc.api.problems import Problem, problem_doc
from marco_svc.api.shapes import (
    HumanScoresFeed,
    HumanScoreShape,
    HumanScoresList,
    ImageDetailShape,
    ImagesPage,
)
from marco_svc.db.models import IMAGE_STATUSES, Image, ImageStatus, ModelVersion
from marco_svc.file_access import NotServable, open_servable
from marco_svc.ingest import is_remote
from marco_svc.ingest_files import served_roots
from marco_svc.labels import HUMAN_SCALES
from marco_svc.scoring import heatmaps
from marco_svc.scoring.heatmap_jobs import HeatmapUnavailable, Pending
from marco_svc.thumbnails import thumbnail

blueprint = ApiBlueprint("images", __name__, description="Images, heatmaps and human scores")
READ = Permission.READ
BINARY = {"type": "string", "format": "binary"}


class ImageFilter(PageArgs):
    status = ma.fields.String(validate=ma.validate.OneOf(IMAGE_STATUSES))


class HeatmapArgs(QueryArgs):
    model = model_field("NAME or NAME:VERSION (default: scoring now)")
    class_ = text_field(data_key="class", metadata={"description": "default: crystals for hits"})


class HumanLabel(ma.Schema):
    label = ma.fields.String(required=True, validate=ma.validate.Length(1, 64))
    scheme = ma.fields.String(
        load_default="marco4",
        validate=ma.validate.OneOf(list(HUMAN_SCALES)),
        metadata={"description": "the scale the label is on"},
    )


class HumanLabelChange(ma.Schema):
    label = ma.fields.String(validate=ma.validate.Length(1, 64))
    scheme = ma.fields.String(validate=ma.validate.OneOf(list(HUMAN_SCALES)))


# Which labels go with which scale cannot be said field by field, so the documented body is
# one alternative per scale (the views check the pair and answer 422 otherwise).
LABEL_ON_A_SCALE = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {
                        "type": "object",
                        "required": ["label", "scheme"],
                        "additionalProperties": False,
                        "properties": {
                            "label": {"type": "string", "enum": list(labels)},
                            "scheme": {"type": "string", "const": scheme},
                        },
                    }
                    for scheme, labels in HUMAN_SCALES.items()
                ]
            }
        }
    },
}


def _missing(image_id: int) -> Problem:
    return Problem(404, "Image not found", f"no image {image_id}")


def _from_imager(image_id: int) -> None:
    """For an image whose file is on an imager PC: ask for it there and answer 202 (retry
    later), or 410 with the reason it cannot come. Returns when the server has the file."""
    kept = edge_wanted.ask(runtime().db, image_id)
    if kept is None:
        return
    if kept.reason is not None:
        raise Problem(410, "Image file not available", kept.reason)
    raise Problem(
        202,
        "Requested from the imager PC",
        "the file is on the imager PC, which has been asked for it; retry after the given seconds",
        headers={"Retry-After": str(kept.retry_after)},
    )


def _stored_file(image_id: int, none: str) -> tuple[str, str]:
    """(uri, sha256) of an image whose file the server has; 404 for no image or a failed
    one (`none` says what is not served), 202 or 410 for a file on an imager PC."""
    for _ in range(2):  # again once, when the file arrived from the imager meanwhile
        with db_session() as session:
            found = session.get(Image, image_id)
            facts = (found.uri, found.sha256, found.status) if found else None
        if facts is None:
            raise _missing(image_id)
        uri, sha256, status = facts
        if status == ImageStatus.FAILED:
            raise Problem(404, "No image file", f"image {image_id} failed its checks; {none}")
        if not is_remote(uri):
            break
        _from_imager(image_id)
    return uri, sha256


@blueprint.route("/images")
@guarded(blueprint, READ)
@blueprint.arguments(ImageFilter, location="query")
@blueprint.response(200, ImagesPage)
def images(args: dict) -> dict:
    """Images oldest first, optionally of one status (`failed`: with their reasons)."""
    with db_session() as session:
        return listing.images_page(
            session,
            args.get("status"),
            args["limit"],
            cursor_value(args.get("cursor")),
            may(Permission.ADMIN),
        )


@blueprint.route("/images/<id:image_id>")
@guarded(blueprint, READ)
@blueprint.response(200, ImageDetailShape)
@blueprint.alt_response(404, **problem_doc("no such image"))
def image(image_id: int) -> dict:
    """One image: its drop and inspection, quality, every model's score, every human label."""
    with db_session() as session:
        detail = queries.image_detail(session, image_id, may(Permission.ADMIN))
    if detail is None:
        raise _missing(image_id)
    return detail


@blueprint.route("/images/<id:image_id>/file")
@guarded(blueprint, READ)
@blueprint.response(200, BINARY, content_type="image/jpeg", description="the image file")
@blueprint.alt_response(404, **problem_doc("no such image, or it failed its checks"))
@blueprint.alt_response(202, **problem_doc("requested from the imager PC; retry after"))
@blueprint.alt_response(410, **problem_doc("the file is gone or changed"))
def image_file(image_id: int) -> Response:
    """The image as stored, if it passed the image check and lies in a served folder; an
    image whose file is still on the imager PC is requested from there (202)."""
    uri, _ = _stored_file(image_id, "no file served")
    try:
        stream, mimetype = open_servable(uri, served_roots(runtime().settings))
    except NotServable as exc:
        detail = str(exc) if may(Permission.ADMIN) else exc.public
        raise Problem(exc.status, "Image file not served", detail) from None
    return send_file(stream, mimetype=mimetype, max_age=3600, conditional=False)


@blueprint.route("/images/<id:image_id>/thumbnail.jpg")
@guarded(blueprint, READ)
@blueprint.response(200, BINARY, content_type="image/jpeg", description="at most 256 px a side")
@blueprint.alt_response(404, **problem_doc("no such image, or it failed its checks"))
@blueprint.alt_response(202, **problem_doc("requested from the imager PC; retry after"))
@blueprint.alt_response(410, **problem_doc("the file is gone or changed"))
def image_thumbnail(image_id: int) -> Response:
    """A small JPEG of the image, made once and kept (for plate pages); an image whose
    file is still on the imager PC is requested from there (202)."""
    uri, sha256 = _stored_file(image_id, "no thumbnail")
    settings = runtime().settings
    try:
        path = thumbnail(settings.resolved_data_dir, image_id, uri, sha256, served_roots(settings))
    except NotServable as exc:
        detail = str(exc) if may(Permission.ADMIN) else exc.public
        raise Problem(exc.status, "Image file not served", detail) from None
    return send_file(path, mimetype="image/jpeg", max_age=86400)


def _heatmap_version(ref: str | None) -> ModelVersion:
    with db_session() as session:
        version_id = version_id_of(session, ref) if ref else scoring_version_id()
        found = session.get(ModelVersion, version_id) if version_id else None
    if found is None:
        raise Problem(404, "Model not found", f"no model version {ref or '(scoring now)'}")
    return found


@blueprint.route("/images/<id:image_id>/heatmap.png")
@guarded(blueprint, READ)
@blueprint.arguments(HeatmapArgs, location="query")
@blueprint.response(200, BINARY, content_type="image/png", description="the heatmap overlay")
@blueprint.alt_response(202, **problem_doc("computing, or the file is requested; retry after"))
@blueprint.alt_response(404, **problem_doc("no such image or model"))
@blueprint.alt_response(410, **problem_doc("the file cannot come from the imager PC"))
@blueprint.alt_response(503, **problem_doc("too many queued, or the model cannot be loaded"))
def heatmap(args: dict, image_id: int) -> Response:
    """The SmoothGrad heatmap of one image for one class. Cached ones come at once; others
    are computed by a bounded pool: 202 with Retry-After while one is being made (or while
    the file is requested from the imager PC)."""
    rt = runtime()
    _from_imager(image_id)
    version = _heatmap_version(args.get("model"))
    class_label = args.get("class_")
    try:
        made = heatmaps.cached(rt, image_id, version, class_label)
        if made is None:
            made = service().heatmap_jobs.request(
                (image_id, version.id, class_label),
                lambda: heatmaps.compute(rt, image_id, version, class_label),
                rt.settings.heatmap_wait_seconds,
            )
    except heatmaps.HeatmapModelError as exc:
        detail = (
            str(exc) if may(Permission.ADMIN) else f"{version.name}:{version.version} cannot load"
        )
        raise Problem(503, "Heatmap model unavailable", detail) from None
    except heatmaps.HeatmapError as exc:
        status = 404 if str(exc).startswith("no image") else 422
        raise Problem(status, "No heatmap", str(exc)) from None
    except HeatmapUnavailable as exc:
        raise Problem(
            503,
            "Heatmaps busy",
            "too many heatmaps are queued; retry later",
            headers={"Retry-After": str(exc.retry_after)},
        ) from None
    if isinstance(made, Pending):
        raise Problem(
            202,
            "Heatmap being computed",
            "retry after the given seconds",
            headers={"Retry-After": str(made.retry_after)},
        )
    made = getattr(made, "value", made)
    answer = send_file(made.path, mimetype="image/png", max_age=3600)
    answer.headers["X-Heatmap-Class"] = made.class_label
    answer.headers["X-Heatmap-Cached"] = str(made.cached).lower()
    return answer


@blueprint.route("/images/<id:image_id>/human-scores", methods=["GET"])
@guarded(blueprint, READ)
@blueprint.response(200, HumanScoresList)
@blueprint.alt_response(404, **problem_doc("no such image"))
def image_human_scores(image_id: int) -> dict:
    """Everyone's labels for this image."""
    with db_session() as session:
        if session.get(Image, image_id) is None:
            raise _missing(image_id)
        return {"human_scores": human_scores.of_image(session, image_id)}


@blueprint.route("/images/<id:image_id>/human-score", methods=["PUT"])
@guarded(blueprint, Permission.LABEL)
@blueprint.arguments(HumanLabel, location="json", description="the label and its scale")
@blueprint.doc(requestBody=LABEL_ON_A_SCALE)
@blueprint.response(200, HumanScoreShape, description="your label, unchanged or changed")
@blueprint.alt_response(201, schema=HumanScoreShape, description="your first label here")
@blueprint.alt_response(404, **problem_doc("no such image"))
def put_human_score(body: dict, image_id: int) -> tuple[dict, int]:
    """Set your label for this image, on a scale (marco4: Clear, Crystals, Other,
    Precipitate; merck10: the ten Merck classes). The same label again changes nothing."""
    caller = current_caller()
    try:
        written = human_scores.put(
            runtime().db, image_id, body["label"], body["scheme"], caller.name, "api"
        )
    except LookupError:
        raise _missing(image_id) from None
    except human_scores.LabelError as exc:
        raise Problem(422, "Invalid label", str(exc)) from None
    return written.body, 201 if written.created else 200


@blueprint.route("/human-scores/<id:human_id>", methods=["PATCH"])
@guarded(blueprint, Permission.LABEL)
@blueprint.arguments(HumanLabelChange, location="json")
@blueprint.doc(requestBody=LABEL_ON_A_SCALE)
@blueprint.response(200, HumanScoreShape)
@blueprint.alt_response(404, **problem_doc("no such human score"))
def patch_human_score(body: dict, human_id: int) -> dict:
    """Correct a label (yours; an admin may correct anyone's)."""
    caller = current_caller()
    try:
        written = human_scores.patch(
            runtime().db, human_id, caller.name, may(Permission.ADMIN), **body
        )
    except LookupError as exc:
        raise Problem(404, "Human score not found", str(exc)) from None
    except human_scores.NotYours as exc:
        raise Problem(403, "Forbidden", str(exc)) from None
    except human_scores.LabelError as exc:
        raise Problem(422, "Invalid label", str(exc)) from None
    return written.body


@blueprint.route("/human-scores")
@guarded(blueprint, READ)
@blueprint.arguments(FeedArgs, location="query")
@blueprint.response(200, HumanScoresFeed)
def human_scores_feed(args: dict) -> dict:
    """Labels set or corrected since the cursor, in commit order (poll with `next`)."""
    with db_session() as session:
        return human_scores.since(session, args["since"], args["limit"])
