"""Plates: search (newest first), one plate with its counts, its inspections (a time
course), an inspection's drops with their latest scores, its auto-scores in SynchWeb's
shape, and a plate's scores as CSV. Plate resources carry an ETag (If-None-Match: 304)."""

from __future__ import annotations

import re

from flask import Response, request

from marco_svc import ispyb, listing
from marco_svc.api.access import Permission, guarded, may
from marco_svc.api.context import db_session
from marco_svc.api.models import version_id_of
from marco_svc.api.params import (
    ApiBlueprint,
    PageArgs,
    QueryArgs,
    cursor_value,
    model_field,
    text_field,
)
from marco_svc.api.problems import Problem, problem_doc
from marco_svc.api.shapes import AutoScore, DropsPage, InspectionsPage, PlateDetailShape, PlatesPage
from marco_svc.db.models import Inspection, Plate
from marco_svc.plate_csv import plate_scores_csv

blueprint = ApiBlueprint("plates", __name__, description="Plates, inspections and their drops")
READ = Permission.READ


class PlateSearch(PageArgs):
    barcode = text_field(metadata={"description": "part of the barcode"})


class ModelArg(QueryArgs):
    model = model_field("NAME or NAME:VERSION (default: latest scores)")


def _plate(session, barcode: str) -> Plate:
    plate = listing.find_plate(session, barcode)
    if plate is None:
        raise Problem(404, "Plate not found", f"no plate with barcode {barcode!r}")
    return plate


def _inspection(session, inspection_id: int) -> Inspection:
    inspection = session.get(Inspection, inspection_id)
    if inspection is None:
        raise Problem(404, "Inspection not found", f"no inspection {inspection_id}")
    return inspection


@blueprint.route("/plates")
@guarded(blueprint, READ)
@blueprint.arguments(PlateSearch, location="query")
@blueprint.response(200, PlatesPage)
def plates(args: dict) -> dict:
    """Plates, newest first; `barcode` finds those whose barcode contains it."""
    with db_session() as session:
        return listing.plates_page(
            session, args.get("barcode"), args["limit"], cursor_value(args.get("cursor"))
        )


@blueprint.route("/plates/<barcode:barcode>")
@guarded(blueprint, READ)
@blueprint.etag
@blueprint.response(200, PlateDetailShape)
@blueprint.alt_response(404, **problem_doc("no such plate"))
def plate(barcode: str) -> dict:
    """One plate: its type, images by status, and its newest inspection's classes and hits."""
    with db_session() as session:
        return listing.plate_overview(session, _plate(session, barcode))


@blueprint.route("/plates/<barcode:barcode>/inspections")
@guarded(blueprint, READ)
@blueprint.etag
@blueprint.arguments(PageArgs, location="query")
@blueprint.response(200, InspectionsPage)
@blueprint.alt_response(404, **problem_doc("no such plate"))
def inspections(args: dict, barcode: str) -> dict:
    """The plate's inspections, oldest first, with days since the first."""
    with db_session() as session:
        plate = _plate(session, barcode)
        return listing.inspections_page(
            session, plate, args["limit"], cursor_value(args.get("cursor"))
        )


@blueprint.route("/inspections/<id:inspection_id>/drops")
@guarded(blueprint, READ)
@blueprint.etag
@blueprint.arguments(PageArgs, location="query")
@blueprint.response(200, DropsPage)
@blueprint.alt_response(404, **problem_doc("no such inspection"))
def drops(args: dict, inspection_id: int) -> dict:
    """The inspection's drop images in well order, each with its latest score."""
    with db_session() as session:
        _inspection(session, inspection_id)
        return listing.inspection_drops_page(
            session,
            inspection_id,
            args["limit"],
            cursor_value(args.get("cursor")),
            may(Permission.ADMIN),
        )


@blueprint.route("/inspections/<id:inspection_id>/autoscores")
@guarded(blueprint, READ)
@blueprint.arguments(ModelArg, location="query")
@blueprint.response(200, AutoScore(many=True))
@blueprint.alt_response(404, **problem_doc("no such inspection or model"))
def autoscores(args: dict, inspection_id: int) -> list:
    """Auto-scores of the inspection as SynchWeb reads them: per image its ISPyB classes
    (clear, crystal, precipitant, other), mapped by class name."""
    with db_session() as session:
        _inspection(session, inspection_id)
        version_id = version_id_of(session, args.get("model")) if args.get("model") else None
        rows = ispyb.autoscores(session, inspection_id, version_id)
    if not may(Permission.ADMIN):
        for row in rows:
            row.pop("IMAGEFULLPATH", None)
    return rows


@blueprint.route("/plates/<barcode:barcode>/scores.csv")
@guarded(blueprint, READ)
@blueprint.arguments(ModelArg, location="query")
@blueprint.response(
    200,
    {"type": "string"},
    content_type="text/csv",
    description="one row per image of every inspection, with its latest (or the model's) score",
)
@blueprint.alt_response(404, **problem_doc("no such plate or model"))
def scores_csv(args: dict, barcode: str) -> Response:
    """The plate's scores as CSV."""
    with db_session() as session:
        plate = _plate(session, barcode)
        version_id = version_id_of(session, args.get("model")) if args.get("model") else None
        text = plate_scores_csv(session, plate, version_id)
    answer = Response(text, mimetype="text/csv")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", barcode)
    answer.headers["Content-Disposition"] = f'attachment; filename="{name}-scores.csv"'
    answer.add_etag()
    return answer.make_conditional(request)
