"""The pages: sign in and out, plates, a plate's grid, a drop, the models. Each reads
through the same use-case modules as the API (listing, plate_grid, queries); the page's
JavaScript changes data only through the API (with the session and its CSRF token)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    abort,
    g,
    redirect,
    render_template,
    request,
    send_from_directory,
    session,
    url_for,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from marco_svc import edge_wanted, listing, queries, registry, tokens
from marco_svc.api import sessions
from marco_svc.api.access import GRANTS, Permission
from marco_svc.api.context import db_session, runtime
from marco_svc.db.models import Drop, Image, Inspection, ModelVersion, Plate, Score
from marco_svc.ingest import is_remote
from marco_svc.labels import HUMAN_SCALES, MARCO4_LABELS, to_four
from marco_svc.plate_grid import plate_grid
from marco_svc.registry.store import ModelStoreError
from marco_svc.tokens import Caller, Role

blueprint = Blueprint(
    "web", __name__, template_folder="templates", static_folder="static", static_url_path="/static"
)
SEEN_PLATES = 200  # "new hits since my last visit" is remembered for this many plates
REPORT_FILES = (
    "roc_marco4.png",
    "roc_merck10.png",
    "confusion_marco4.png",
    "confusion_merck10.png",
)


def signed_in(view: Callable[..., Any]) -> Callable[..., Any]:
    """A page for signed-in people (lims, scientist, admin); others go to the sign-in page."""

    @wraps(view)
    def checked(*args: Any, **kwargs: Any) -> Any:
        caller = sessions.session_caller(runtime().db)
        if caller is None:
            return redirect(url_for("web.signin", next=request.full_path.rstrip("?")))
        g.caller = caller
        return view(*args, **kwargs)

    return checked


@blueprint.app_context_processor
def _page_globals() -> dict[str, Any]:
    caller: Caller | None = g.get("caller")
    return {
        "caller": caller,
        "can_label": caller is not None and Permission.LABEL in GRANTS[caller.role],
        "csrf_token": sessions.csrf_token(),
    }


@blueprint.app_template_filter("rule")
def _rule_text(rule: dict[str, Any]) -> str:
    """A crystal rule as people read it."""
    if not isinstance(rule, dict) or not rule:
        return "—"
    if rule.get("kind") == "top_k":
        return f"a crystal class in the top {rule.get('k')}"
    point = rule.get("operating_point")
    threshold = rule.get("threshold")
    text = f"P(Crystals) ≥ {threshold:.2f}" if isinstance(threshold, float | int) else "threshold"
    return f"{text} (operating point {point})" if point else text


@blueprint.app_template_filter("quality_rows")
def _quality_rows(quality: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Each quality check as (name, its value against its limit, flagged), then the drop's
    measured shape."""
    rows = []
    for name, check in (quality.get("checks") or {}).items():
        if isinstance(check, dict):
            value, limit = check.get("value"), check.get("limit")
            text = f"{value:.3g}" if isinstance(value, float | int) else str(value)
            if limit is not None:
                text += f" (limit {limit:g})" if isinstance(limit, float | int) else f" ({limit})"
            rows.append((name.replace("_", " "), text, bool(check.get("flag"))))
    for name, value in (quality.get("drop") or {}).items():
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        rows.append((f"drop {name.replace('_', ' ')}", text, False))
    return rows


@blueprint.after_request
def _no_inline_code(response: Any) -> Any:
    if response.mimetype == "text/html":
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'",
        )
    return response


@blueprint.get("/")
def home() -> Any:
    if sessions.session_caller(runtime().db) is None:
        return redirect(url_for("web.signin"))
    return redirect(url_for("web.plates"))


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never //host or /\\host, which browsers send elsewhere)."""
    inside = bool(target) and target.startswith("/") and not target.startswith(("//", "/\\"))
    return target if inside else "/plates"


@blueprint.route("/signin", methods=["GET", "POST"])
def signin() -> Any:
    error = None
    if request.method == "POST":
        rt = runtime()
        presented = (request.form.get("token") or "").strip()
        caller = tokens.authenticate(rt.db, rt.settings.api_tokens, presented)
        if caller is None:
            error = "That token is unknown or revoked."
        elif caller.token_id is None or caller.role == Role.ROBOT:
            error = "Robot tokens upload images; sign in with a scientist or lims token."
        else:
            sessions.sign_in(caller)
            return redirect(_safe_next(request.form.get("next")))
    status = 401 if error else 200
    return render_template("signin.html", error=error, next=request.values.get("next")), status


@blueprint.post("/signout")
def signout() -> Any:
    if sessions.csrf_ok():
        sessions.sign_out()
    return redirect(url_for("web.signin"))


def _new_hits(session_db: Session, plate: Plate, since: int) -> int:
    return (
        session_db.scalar(
            select(func.count())
            .select_from(Score)
            .join(Image, Score.image_id == Image.id)
            .join(Drop, Image.drop_id == Drop.id)
            .where(Drop.plate_id == plate.id, Score.hit, Score.feed_seq > since)
        )
        or 0
    )


def _feed_end(session_db: Session, plate: Plate) -> int:
    return (
        session_db.scalar(
            select(func.coalesce(func.max(Score.feed_seq), 0))
            .join(Image, Score.image_id == Image.id)
            .join(Drop, Image.drop_id == Drop.id)
            .where(Drop.plate_id == plate.id)
        )
        or 0
    )


@blueprint.get("/plates")
@signed_in
def plates() -> Any:
    search = (request.args.get("q") or "").strip()[:128] or None
    seen: dict[str, int] = session.get("seen", {})
    with db_session() as db:
        page = listing.plates_page(db, search, 100, 0)
        barcodes = [item["barcode"] for item in page["plates"]]
        found = {p.barcode: p for p in db.scalars(select(Plate).where(Plate.barcode.in_(barcodes)))}
        rows = []
        for barcode in barcodes:
            plate = found[barcode]
            overview = listing.plate_overview(db, plate)
            new = _new_hits(db, plate, seen[plate.barcode]) if plate.barcode in seen else None
            rows.append({**overview, "new_hits": new})
    return render_template("plates.html", plates=rows, search=search or "")


def _remember_visit(db: Session, plate: Plate) -> None:
    seen = dict(session.get("seen", {}))
    seen.pop(plate.barcode, None)
    seen[plate.barcode] = _feed_end(db, plate)
    session["seen"] = dict(list(seen.items())[-SEEN_PLATES:])


def _version_choice(db: Session, ref: str | None) -> ModelVersion | None:
    if not ref:
        return None
    name, _, version = ref.partition(":")
    found = db.scalar(
        select(ModelVersion)
        .where(ModelVersion.name == name, ModelVersion.version == version)
        .limit(1)
    )
    if found is None:
        abort(404, f"no model version {ref!r}")
    return found


@blueprint.get("/plates/<barcode:barcode>")
@signed_in
def plate(barcode: str) -> Any:
    with db_session() as db:
        found = listing.find_plate(db, barcode)
        if found is None:
            abort(404, f"no plate {barcode!r}")
        inspections = list(
            db.scalars(
                select(Inspection)
                .where(Inspection.plate_id == found.id)
                .order_by(Inspection.imaged_at)
            )
        )
        if not inspections:
            abort(404, f"plate {barcode!r} has no inspections")
        wanted = request.args.get("inspection", type=int)
        inspection = next((i for i in inspections if i.id == wanted), inspections[-1])
        version = _version_choice(db, request.args.get("model"))
        compare = _version_choice(db, request.args.get("compare"))
        grid = plate_grid(
            db, found, inspection, version.id if version else None, compare.id if compare else None
        )
        versions = [
            f"{v.name}:{v.version}"
            for v in db.scalars(select(ModelVersion).order_by(ModelVersion.id.desc()))
        ]
        _remember_visit(db, found)
    first = inspections[0].imaged_at
    timeline = [
        {
            "id": i.id,
            "imaged_at": i.imaged_at,
            "day": (i.imaged_at - first).total_seconds() / 86400,
        }
        for i in inspections
    ]
    return render_template(
        "plate.html",
        plate=found,
        grid=grid,
        inspections=timeline,
        inspection=inspection,
        classes=MARCO4_LABELS,
        versions=versions,
        model=f"{version.name}:{version.version}" if version else "",
        compare=f"{compare.name}:{compare.version}" if compare else "",
    )


def _neighbours(db: Session, image: Image) -> dict[str, int | None]:
    """First, previous, next and last image of the same inspection, in well order."""
    ids = list(
        db.scalars(
            select(Image.id)
            .join(Drop, Image.drop_id == Drop.id)
            .where(Image.inspection_id == image.inspection_id)
            .order_by(*queries.WELL_ORDER)
        )
    )
    at = ids.index(image.id) if image.id in ids else 0
    return {
        "first": ids[0] if ids else None,
        "previous": ids[at - 1] if at > 0 else None,
        "next": ids[at + 1] if at + 1 < len(ids) else None,
        "last": ids[-1] if ids else None,
    }


def _history(db: Session, image: Image) -> list[dict[str, Any]]:
    """The same drop at every inspection (same imaging mode), oldest first."""
    rows = list(
        db.scalars(
            select(Image)
            .join(Inspection, Image.inspection_id == Inspection.id)
            .where(Image.drop_id == image.drop_id, Image.imaging_mode == image.imaging_mode)
            .order_by(Inspection.imaged_at, Image.version)
        )
    )
    scores = queries.latest_scores(db, [row.id for row in rows])
    first = rows[0].inspection.imaged_at if rows else None
    return [
        {
            "id": row.id,
            "imaged_at": row.inspection.imaged_at,
            "day": (row.inspection.imaged_at - first).total_seconds() / 86400,
            "top_class": scores[row.id].top_class if row.id in scores else None,
            "hit": bool(scores[row.id].hit) if row.id in scores else False,
            "current": row.id == image.id,
        }
        for row in rows
    ]


def _heads(probabilities: dict[str, float]) -> dict[str, list[tuple[str, float]]]:
    """Probabilities per head: the four-way (MARCO) and, when present, the ten-way."""
    heads = {"marco4": sorted(to_four(probabilities).items(), key=lambda kv: -kv[1])}
    ten = {k: v for k, v in probabilities.items() if k not in MARCO4_LABELS}
    if ten:
        heads["merck10"] = sorted(ten.items(), key=lambda kv: -kv[1])
    return heads


@blueprint.get("/drops/<id:image_id>")
@signed_in
def drop(image_id: int) -> Any:
    with db_session() as db:
        detail = queries.image_detail(db, image_id, with_path=False)
        image = db.get(Image, image_id)
        if detail is None or image is None or image.drop_id is None:
            abort(404, f"no drop image {image_id}")
        plate = image.drop.plate
        neighbours = _neighbours(db, image)
        history = _history(db, image)
        remote = is_remote(image.uri)
    score = detail["score"]
    return render_template(
        "drop.html",
        image=detail,
        kept=edge_wanted.ask(runtime().db, image_id) if remote else None,
        plate=plate,
        score=score,
        heads=_heads(score["probabilities"]) if score else {},
        neighbours=neighbours,
        history=history,
        scales=HUMAN_SCALES,
    )


@blueprint.get("/models")
@signed_in
def models() -> Any:
    with db_session() as db:
        versions = [
            listing.model_dict(v, full=True)
            for v in db.scalars(select(ModelVersion).order_by(ModelVersion.id.desc()))
        ]
        plates_list = listing.plates_page(db, None, 100, 0)["plates"]
    active = next((v for v in versions if v["active"]), versions[0] if versions else None)
    plots = _report_files(active["ref"]) if active else []
    return render_template(
        "models.html", versions=versions, active=active, plates=plates_list, plots=plots
    )


def _report_folder(ref: str) -> Path | None:
    try:
        return registry.find(runtime().settings, ref).folder / "report"
    except ModelStoreError:
        return None


def _report_files(ref: str) -> list[str]:
    """The evaluation plots the version's model folder holds."""
    folder = _report_folder(ref)
    return [name for name in REPORT_FILES if folder is not None and (folder / name).is_file()]


@blueprint.get("/compare")
@signed_in
def compare() -> Any:
    """The models page's form: a plate with two versions side by side."""
    barcode = request.args.get("barcode", "")
    if not barcode:
        abort(404)
    args = {k: request.args[k] for k in ("model", "compare") if request.args.get(k)}
    return redirect(url_for("web.plate", barcode=barcode, **args))


@blueprint.get("/models/<id:version_id>/report/<name>")
@signed_in
def model_report(version_id: int, name: str) -> Any:
    """An evaluation plot of a version (from its model folder's report)."""
    if name not in REPORT_FILES:
        abort(404)
    with db_session() as db:
        version = db.get(ModelVersion, version_id)
        ref = f"{version.name}:{version.version}" if version else None
    folder = _report_folder(ref) if ref else None
    if folder is None:
        abort(404)
    return send_from_directory(folder, name, max_age=3600)
