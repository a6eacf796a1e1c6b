"""Scores for people and LIMS: one image with its scores, its file, its heatmap, and the
feed of hits (`GET /api/v1/hits?since=<cursor>`)."""

from __future__ import annotations

from flask import Blueprint, request, send_file
from sqlalchemy import select

from marco_svc import queries, registry
from marco_svc.api.context import db_session, runtime
from marco_svc.api.problems import Problem
from marco_svc.db.models import Image, ImageStatus, ModelVersion
from marco_svc.file_access import NotServable, open_servable
from marco_svc.ingest_files import served_roots
from marco_svc.scoring.heatmaps import HeatmapError, compute

blueprint = Blueprint("scores", __name__)


def _int_arg(name: str, default: int, low: int = 0, high: int = 10_000) -> int:
    try:
        value = int(request.args.get(name, default))
    except ValueError:
        raise Problem(422, f"Invalid {name}", f"{name} must be an integer") from None
    if not low <= value <= high:
        raise Problem(422, f"Invalid {name}", f"{name} must lie in {low}..{high}")
    return value


@blueprint.get("/images/<int:image_id>")
def image(image_id: int):
    with db_session() as session:
        detail = queries.image_detail(session, image_id)
    if detail is None:
        raise Problem(404, "Image not found", f"no image {image_id}")
    return detail


@blueprint.get("/images/<int:image_id>/file")
def image_file(image_id: int):
    """The image as stored, if it passed the image check and lies in a served folder."""
    with db_session() as session:
        found = session.execute(
            select(Image.uri, Image.status).where(Image.id == image_id)
        ).one_or_none()
    if found is None:
        raise Problem(404, "Image not found", f"no image {image_id}")
    if found.status == ImageStatus.FAILED:
        raise Problem(404, "No image file", f"image {image_id} failed its checks; no file served")
    try:
        stream, mimetype = open_servable(found.uri, served_roots(runtime().settings))
    except NotServable as exc:
        raise Problem(exc.status, "Image file not served", str(exc)) from None
    return send_file(stream, mimetype=mimetype, max_age=3600, conditional=False)


def _model_version(ref: str | None) -> ModelVersion:
    """The version `ref` names (NAME or NAME:VERSION, newest first), else the one that scores
    now."""
    with db_session() as session:
        query = select(ModelVersion)
        if ref:
            name, _, version = ref.partition(":")
            query = query.where(ModelVersion.name == name)
            if version:
                query = query.where(ModelVersion.version == version)
            query = query.order_by(ModelVersion.created_at.desc())
        else:
            rt = runtime()
            query = query.where(ModelVersion.id == registry.scoring_version_id(rt.settings, rt.db))
        found = session.scalars(query).first()
    if found is None:
        raise Problem(404, "Model not found", f"no model version {ref or '(scoring now)'}")
    return found


@blueprint.get("/images/<int:image_id>/heatmap.png")
def heatmap(image_id: int):
    """The SmoothGrad heatmap (cached, or computed now: seconds) of one image."""
    version = _model_version(request.args.get("model"))
    try:
        made = compute(runtime(), image_id, version, request.args.get("class") or None)
    except HeatmapError as exc:
        status = 404 if str(exc).startswith("no image") else 422
        raise Problem(status, "No heatmap", str(exc)) from None
    answer = send_file(made.path, mimetype="image/png", max_age=3600)
    answer.headers["X-Heatmap-Class"] = made.class_label
    answer.headers["X-Heatmap-Cached"] = str(made.cached).lower()
    return answer


@blueprint.get("/hits")
def hits():
    """Hits of the model that scores now, newer than the cursor; poll with the returned cursor."""
    cursor = _int_arg("since", 0, 0, 2**62)
    limit = _int_arg("limit", 500, 1, 5000)
    rt = runtime()
    version_id = registry.scoring_version_id(rt.settings, rt.db)
    with db_session() as session:
        return queries.hits_since(session, version_id, cursor, limit)
