"""Model versions: the list (newest first), one version's card and metrics, and activating
one (admin: the model that scores new images from then on)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from marco_svc import listing, registry
from marco_svc.api.access import Permission, guarded
from marco_svc.api.context import db_session, runtime
from marco_svc.api.params import ApiBlueprint, PageArgs, cursor_value
from marco_svc.api.problems import Problem, problem_doc
from marco_svc.api.shapes import ModelDetailShape, ModelsPage
from marco_svc.db.models import ModelVersion
from marco_svc.registry.store import ModelStoreError, parse_ref

blueprint = ApiBlueprint("models", __name__, description="Model versions")


def version_id_of(session: Session, ref: str) -> int:
    """The id of the version `ref` names (NAME: its newest), else 404."""
    try:
        name, version = parse_ref(ref)
    except ModelStoreError as exc:
        raise Problem(422, "Invalid model", str(exc)) from None
    query = select(ModelVersion.id).where(ModelVersion.name == name)
    if version is not None:
        query = query.where(ModelVersion.version == version)
    found = session.scalar(query.order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc()))
    if found is None:
        raise Problem(404, "Model not found", f"no model version {ref!r}")
    return found


def scoring_version_id() -> int | None:
    rt = runtime()
    return registry.scoring_version_id(rt.settings, rt.db)


def _version(session: Session, version_id: int) -> ModelVersion:
    found = session.get(ModelVersion, version_id)
    if found is None:
        raise Problem(404, "Model not found", f"no model version {version_id}")
    return found


@blueprint.route("/models")
@guarded(blueprint, Permission.READ)
@blueprint.arguments(PageArgs, location="query")
@blueprint.response(200, ModelsPage)
def models(args: dict) -> dict:
    """Registered model versions, newest first; `active` marks the one chosen to score."""
    with db_session() as session:
        return listing.models_page(session, args["limit"], cursor_value(args.get("cursor")))


@blueprint.route("/models/<id:version_id>")
@guarded(blueprint, Permission.READ)
@blueprint.response(200, ModelDetailShape)
@blueprint.alt_response(404, **problem_doc("no such model version"))
def model(version_id: int) -> dict:
    """One version with its model card (data, recipe, evaluation, operating points)."""
    with db_session() as session:
        return listing.model_dict(_version(session, version_id), full=True)


@blueprint.route("/models/<id:version_id>/activate", methods=["POST"])
@guarded(blueprint, Permission.ADMIN)
@blueprint.response(200, ModelDetailShape)
@blueprint.alt_response(404, **problem_doc("no such model version"))
def activate(version_id: int) -> dict:
    """Make this version the one that scores (the others become inactive)."""
    with db_session() as session:
        chosen = _version(session, version_id)
        ref = f"{chosen.name}:{chosen.version}"
    registry.activate(runtime().db, ref)
    with db_session() as session:
        return listing.model_dict(_version(session, version_id), full=True)
