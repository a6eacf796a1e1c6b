"""The REST API, version 1: plates and images (read side)."""

from __future__ import annotations

from flask import Blueprint, request

from marco_svc import queries
from marco_svc.api.context import db_session
from marco_svc.api.problems import Problem

blueprint = Blueprint("v1", __name__)


@blueprint.get("/plates")
def plates():
    with db_session() as session:
        return {"plates": queries.list_plates(session)}


@blueprint.get("/plates/<barcode>")
def plate(barcode: str):
    with db_session() as session:
        detail = queries.plate_detail(session, barcode)
    if detail is None:
        raise Problem(404, "Plate not found", f"no plate with barcode {barcode!r}")
    return detail


@blueprint.get("/images")
def images():
    status = request.args.get("status")
    try:
        limit = int(request.args.get("limit", 1000))
    except ValueError:
        raise Problem(422, "Invalid limit", "limit must be an integer") from None
    with db_session() as session:
        try:
            return {"images": queries.list_images(session, status, limit)}
        except ValueError as exc:
            raise Problem(422, "Invalid status", str(exc)) from None
