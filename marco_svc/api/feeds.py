"""The LIMS feeds: `GET /hits?since=` and `/scores?since=` answer results in commit order
with a `next` cursor; a client that loops on `next` sees each new or changed result once,
even while several scorers commit out of order (marco_svc.feed)."""

from __future__ import annotations

from datetime import UTC, datetime

import marshmallow as ma

from marco_svc import feed
from marco_svc.api.access import Permission, guarded, may
from marco_svc.api.context import db_session
from marco_svc.api.models import scoring_version_id, version_id_of
from marco_svc.api.params import ApiBlueprint, FeedArgs, model_field, text_field
from marco_svc.api.shapes import HitsFeed, ScoresFeed

blueprint = ApiBlueprint("feeds", __name__, description="Results feeds for LIMS polling")


class FeedFilterArgs(FeedArgs):
    plate = text_field(metadata={"description": "only this plate's barcode"})
    model = model_field("NAME or NAME:VERSION")
    top_class = text_field(data_key="class", metadata={"description": "only this top class"})
    imaged_after = ma.fields.DateTime(metadata={"description": "inspection time (UTC if naive)"})
    imaged_before = ma.fields.DateTime(metadata={"description": "inspection time (UTC if naive)"})


def _utc(moment: datetime | None) -> datetime | None:
    """As stored: naive UTC."""
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _poll(args: dict, hits_only: bool, default_model: int | None) -> dict:
    with db_session() as session:
        version_id = version_id_of(session, args["model"]) if args.get("model") else default_model
        where = feed.FeedFilter(
            model_version_id=version_id,
            hits_only=hits_only,
            barcode=args.get("plate"),
            top_class=args.get("top_class"),
            imaged_after=_utc(args.get("imaged_after")),
            imaged_before=_utc(args.get("imaged_before")),
        )
        return feed.scores_since(
            session, args["since"], args["limit"], where, may(Permission.ADMIN)
        )


@blueprint.route("/hits")
@guarded(blueprint, Permission.READ)
@blueprint.arguments(FeedFilterArgs, location="query")
@blueprint.response(200, HitsFeed)
def hits(args: dict) -> dict:
    """Hits (crystal calls under the lab's rule) since the cursor, of the model that scores
    now unless `model` says otherwise."""
    default = None if args.get("model") else scoring_version_id()
    page = _poll(args, True, default)
    return {"hits": page["items"], "next": page["next"]}


@blueprint.route("/scores")
@guarded(blueprint, Permission.READ)
@blueprint.arguments(FeedFilterArgs, location="query")
@blueprint.response(200, ScoresFeed)
def scores(args: dict) -> dict:
    """Every new or changed score since the cursor, of every model unless `model` is set."""
    page = _poll(args, False, None)
    return {"scores": page["items"], "next": page["next"]}
