"""Response shapes of the REST API (marshmallow schemas): answers are dumped through them,
and the OpenAPI document is generated from them, so the two cannot drift apart."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields

NEXT = fields.String(
    allow_none=True,
    required=True,
    metadata={"description": "the cursor for the next page; null on the last page"},
)


def _next(description: str) -> fields.String:
    return fields.String(required=True, metadata={"description": description})


FEED_NEXT = "pass it back as `since`; equals `since` when nothing new has committed"


class ScoreShape(ma.Schema):
    id = fields.Integer()
    model = fields.String(metadata={"description": "NAME:VERSION"})
    model_version_id = fields.Integer()
    top_class = fields.String()
    p_crystal = fields.Float()
    hit = fields.Boolean()
    probabilities = fields.Dict(keys=fields.String(), values=fields.Float())
    band = fields.String(
        allow_none=True,
        metadata={
            "enum": ["confident", "unknown", None],
            "description": "unknown: the calibrated four-way top-1 probability is below the "
            "model card's unknown_below (rule.unknown_below); null: the model is not calibrated",
        },
    )
    rule = fields.Dict()
    quality = fields.Dict()
    source = fields.String()
    scored_at = fields.String(allow_none=True)


class InspectionRef(ma.Schema):
    id = fields.Integer()
    imaged_at = fields.String(allow_none=True)
    imager = fields.String()
    external_id = fields.String(allow_none=True)


class ImageShape(ma.Schema):
    id = fields.Integer()
    path = fields.String(metadata={"description": "the file on the server (admin tokens only)"})
    barcode = fields.String(allow_none=True)
    well = fields.String(allow_none=True)
    drop = fields.Integer(allow_none=True)
    inspection = fields.Nested(InspectionRef, allow_none=True)
    imaging_mode = fields.String()
    version = fields.Integer()
    sha256 = fields.String()
    width = fields.Integer(allow_none=True)
    height = fields.Integer(allow_none=True)
    status = fields.String(metadata={"enum": ["new", "scored", "failed"]})
    error = fields.String(allow_none=True)
    created_at = fields.String(allow_none=True)
    score = fields.Nested(ScoreShape, allow_none=True, metadata={"description": "latest score"})


class HumanScoreShape(ma.Schema):
    id = fields.Integer()
    image_id = fields.Integer()
    label = fields.String()
    scheme = fields.String()
    who = fields.String()
    source = fields.String()
    at = fields.String(allow_none=True)
    updated_at = fields.String(allow_none=True)


class ImageDetailShape(ImageShape):
    scores = fields.List(fields.Nested(ScoreShape))
    human_scores = fields.List(fields.Nested(HumanScoreShape))


class ImagesPage(ma.Schema):
    images = fields.List(fields.Nested(ImageShape), required=True)
    next = NEXT


class PlateShape(ma.Schema):
    barcode = fields.String()
    plate_type = fields.String()
    wells = fields.Integer()
    drops_per_well = fields.Integer()
    created_at = fields.String(allow_none=True)
    last_imaged_at = fields.String(allow_none=True)


class NewestInspection(ma.Schema):
    id = fields.Integer()
    imaged_at = fields.String(allow_none=True)
    top_classes = fields.Dict(keys=fields.String(), values=fields.Integer())
    hits = fields.Integer()


class PlateDetailShape(PlateShape):
    inspection_count = fields.Integer()
    images = fields.Dict(keys=fields.String(), values=fields.Integer())
    newest_inspection = fields.Nested(NewestInspection, allow_none=True)


class PlatesPage(ma.Schema):
    plates = fields.List(fields.Nested(PlateShape), required=True)
    next = NEXT


class InspectionShape(ma.Schema):
    id = fields.Integer()
    barcode = fields.String()
    imaged_at = fields.String(allow_none=True)
    days_since_first = fields.Float()
    imager = fields.String()
    external_id = fields.String(allow_none=True)
    image_count = fields.Integer()


class InspectionsPage(ma.Schema):
    inspections = fields.List(fields.Nested(InspectionShape), required=True)
    next = NEXT


class DropsPage(ma.Schema):
    drops = fields.List(fields.Nested(ImageShape), required=True)
    next = NEXT


class FeedItem(ImageShape):
    position = fields.String(metadata={"description": "this result's place in the feed"})


class HitsFeed(ma.Schema):
    hits = fields.List(fields.Nested(FeedItem), required=True)
    next = _next(FEED_NEXT)


class ScoresFeed(ma.Schema):
    scores = fields.List(fields.Nested(FeedItem), required=True)
    next = _next(FEED_NEXT)


class HumanFeedItem(HumanScoreShape):
    position = fields.String()


class HumanScoresFeed(ma.Schema):
    human_scores = fields.List(fields.Nested(HumanFeedItem), required=True)
    next = _next(FEED_NEXT)


class HumanScoresList(ma.Schema):
    human_scores = fields.List(fields.Nested(HumanScoreShape), required=True)


class ModelShape(ma.Schema):
    id = fields.Integer()
    name = fields.String()
    version = fields.String()
    ref = fields.String()
    architecture = fields.String()
    scheme = fields.String()
    labels = fields.List(fields.Raw())
    active = fields.Boolean()
    artifact_sha256 = fields.String()
    created_at = fields.String(allow_none=True)


class ModelDetailShape(ModelShape):
    card = fields.Dict()
    metrics = fields.Dict()


class ModelsPage(ma.Schema):
    models = fields.List(fields.Nested(ModelShape), required=True)
    next = NEXT


class SchemeShape(ma.Schema):
    name = fields.String()
    classes = fields.List(fields.String())
    crystal_classes = fields.List(fields.String())
    four_way = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        metadata={"description": "each class's MARCO four-way class"},
    )
    ispyb = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        metadata={"description": "the ISPyB scoreClass each four-way class is stored as"},
    )


class SchemesList(ma.Schema):
    schemes = fields.List(fields.Nested(SchemeShape), required=True)


class AutoScore(ma.Schema):
    """SynchWeb's shape of one image's auto-scores."""

    BLSAMPLEIMAGEID = fields.Integer(metadata={"description": "this service's image id"})
    IMAGEFULLPATH = fields.String(metadata={"description": "admin tokens only"})
    CLASSES = fields.Dict(keys=fields.String(), values=fields.Float())


class UploadedImage(ma.Schema):
    file = fields.String()
    filename = fields.String(allow_none=True)
    well = fields.String()
    drop = fields.Integer()
    imaging_mode = fields.String()
    sha256 = fields.String()
    outcome = fields.String(metadata={"enum": ["created", "duplicate", "failed"]})
    image_id = fields.Integer(allow_none=True)
    reason = fields.String(allow_none=True)


class UploadResult(ma.Schema):
    barcode = fields.String()
    plate_type = fields.String(allow_none=True)
    imaged_at = fields.String()
    imager = fields.String(allow_none=True)
    inspection_id = fields.String(allow_none=True)
    counts = fields.Dict(keys=fields.String(), values=fields.Integer())
    images = fields.List(fields.Nested(UploadedImage))


class EdgeResultOutcome(ma.Schema):
    key = fields.String(metadata={"description": "the result's idempotency key, as sent"})
    outcome = fields.String(metadata={"enum": ["stored", "duplicate", "failed"]})
    image_id = fields.Integer(allow_none=True)
    reason = fields.String(allow_none=True, metadata={"description": "why it failed"})


class EdgeResultsAnswer(ma.Schema):
    results = fields.List(
        fields.Nested(EdgeResultOutcome),
        required=True,
        metadata={"description": "one per result sent, in the same order"},
    )


class EdgeModelShape(ma.Schema):
    ref = fields.String(metadata={"description": "NAME:VERSION"})
    name = fields.String()
    version = fields.String()
    format = fields.String(metadata={"enum": ["tflite-int8", "tflite-fp32"]})
    sha256 = fields.String(metadata={"description": "of the file GET /edge/model/file sends"})
    size = fields.Integer(metadata={"description": "bytes"})
    card = fields.Dict(metadata={"description": "the model card (card.json)"})


class WantedFileShape(ma.Schema):
    image_id = fields.Integer(required=True)
    path = fields.String(
        required=True, metadata={"description": "the file's path on the imager PC"}
    )
    sha256 = fields.String(required=True, metadata={"description": "the file's, as the agent sent"})
    size_bytes = fields.Integer(allow_none=True)


class WantedFiles(ma.Schema):
    images = fields.List(
        fields.Nested(WantedFileShape),
        required=True,
        metadata={"description": "files someone asked for; send each, or say why not"},
    )


class EdgeFileAnswer(ma.Schema):
    image_id = fields.Integer(required=True)
    outcome = fields.String(
        required=True,
        metadata={
            "enum": ["stored", "duplicate", "unavailable"],
            "description": "stored: the server serves the file now; duplicate: it had it "
            "already; unavailable: the reason is kept and the server stops asking",
        },
    )
