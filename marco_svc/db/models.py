"""The data model: plates, inspections, drops, images, model versions, scores and corrections.

Unique keys make ingest and scoring idempotent: one Drop per (plate, well, drop),
one Image per (drop slot, version), one Score per (image, model version).
Timestamps are naive UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class ImageStatus(StrEnum):
    """Where an image stands: waiting to be scored, scored, or failed (with its reason)."""

    NEW = "new"
    SCORED = "scored"
    FAILED = "failed"


IMAGE_STATUSES = tuple(status.value for status in ImageStatus)


def utcnow() -> datetime:
    """Now, as naive UTC (what every timestamp column holds)."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, list[Any]: JSON}


class Plate(Base):
    """A crystallization plate; wells x drops, each marked inferred until a source states it."""

    __tablename__ = "plates"

    id: Mapped[int] = mapped_column(primary_key=True)
    barcode: Mapped[str] = mapped_column(String(128), unique=True)
    wells: Mapped[int] = mapped_column(Integer)
    drops: Mapped[int] = mapped_column(Integer)
    wells_inferred: Mapped[bool] = mapped_column(Boolean, default=False)
    drops_inferred: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    inspections: Mapped[list[Inspection]] = relationship(back_populates="plate")
    drop_rows: Mapped[list[Drop]] = relationship(back_populates="plate")

    @property
    def plate_type(self) -> str:
        return f"{self.wells}x{self.drops}"


class Inspection(Base):
    """One imaging of a plate at one time on one imager."""

    __tablename__ = "inspections"
    __table_args__ = (UniqueConstraint("plate_id", "imaged_at", "imager"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    plate_id: Mapped[int] = mapped_column(ForeignKey("plates.id", ondelete="CASCADE"), index=True)
    imaged_at: Mapped[datetime] = mapped_column(DateTime)
    imager: Mapped[str] = mapped_column(String(128), default="")
    external_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    plate: Mapped[Plate] = relationship(back_populates="inspections")


class Drop(Base):
    """One drop position: plate, well (A1..P24) and drop number (1..4)."""

    __tablename__ = "drops"
    __table_args__ = (UniqueConstraint("plate_id", "well", "drop_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    plate_id: Mapped[int] = mapped_column(ForeignKey("plates.id", ondelete="CASCADE"), index=True)
    well: Mapped[str] = mapped_column(String(4))
    drop_number: Mapped[int] = mapped_column(Integer)
    row_index: Mapped[int] = mapped_column(Integer)
    column_number: Mapped[int] = mapped_column(Integer)

    plate: Mapped[Plate] = relationship(back_populates="drop_rows")


class Image(Base):
    """One image file of one drop at one inspection, or a failed file with its reason.

    An image is known by its slot (inspection, drop, mode) and content: the same bytes in
    two slots are two images (an upload's file on disk may be shared). `version` counts
    different contents seen for one slot, 1..N, unique. A failed file that has no slot
    (no adapter understood its name, its metadata conflicted, or it was refused before
    reading) is known by (uri, sha256). `sha256` is '' for a file that was not read.
    """

    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint(
            "inspection_id", "drop_id", "imaging_mode", "version", name="uq_images_slot_version"
        ),
        Index("ix_images_uri", "uri"),
        Index(
            "uq_images_unplaced_uri_sha256",
            "uri",
            "sha256",
            unique=True,
            sqlite_where=text("drop_id IS NULL"),
            postgresql_where=text("drop_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    inspection_id: Mapped[int | None] = mapped_column(
        ForeignKey("inspections.id", ondelete="CASCADE"), index=True
    )
    drop_id: Mapped[int | None] = mapped_column(
        ForeignKey("drops.id", ondelete="CASCADE"), index=True
    )
    uri: Mapped[str] = mapped_column(String(2048))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    imaging_mode: Mapped[str] = mapped_column(String(32), default="visible")
    version: Mapped[int] = mapped_column(Integer, default=1)
    adapter: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16), default=ImageStatus.NEW.value, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    inspection: Mapped[Inspection | None] = relationship()
    drop: Mapped[Drop | None] = relationship()
    scores: Mapped[list[Score]] = relationship(back_populates="image")


class EdgeImage(Base):
    """An image an edge agent scored, whose file stays on its imager PC: where it is there
    (`remote_uri`, `edge://IMAGER/PATH`, kept after the file came and the image's uri was
    pointed at it), which agent holds it (the scope of the token that sent the result),
    when someone first asked for the file, when the agent was last told so, and why the
    agent cannot send it (then the server stops asking). `marco_svc.edge_wanted` keeps it."""

    __tablename__ = "edge_images"
    __table_args__ = (Index("ix_edge_images_scope_wanted", "scope", "wanted_at"),)

    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    remote_uri: Mapped[str] = mapped_column(String(2048))
    scope: Mapped[str] = mapped_column(String(80))
    wanted_at: Mapped[datetime | None] = mapped_column(DateTime)
    offered_at: Mapped[datetime | None] = mapped_column(DateTime)
    unavailable: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ModelVersion(Base):
    """A registered model: its card, artifact checksum, metrics, and whether it scores now."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    architecture: Mapped[str] = mapped_column(String(64))
    scheme: Mapped[str] = mapped_column(String(16))
    labels: Mapped[list[Any]] = mapped_column(JSON)
    artifact_uri: Mapped[str] = mapped_column(String(2048), default="")
    artifact_sha256: Mapped[str] = mapped_column(String(64), default="")
    card: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Score(Base):
    """What one model version made of one image, and the crystal decision under a rule."""

    __tablename__ = "scores"
    __table_args__ = (
        UniqueConstraint("image_id", "model_version_id"),
        # the LIMS hits poll: one version's hits after a feed position, in feed order
        Index("ix_scores_model_hit_feed", "model_version_id", "hit", "feed_seq"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    probabilities: Mapped[dict[str, Any]] = mapped_column(JSON)
    top_class: Mapped[str] = mapped_column(String(64))
    p_crystal: Mapped[float] = mapped_column(Float)
    hit: Mapped[bool] = mapped_column(Boolean, index=True)
    rule: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    quality: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(32), default="server")
    # The score's place in the results feed, in commit order (marco_svc.feed); a changed
    # result takes a new place.
    feed_seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    image: Mapped[Image] = relationship(back_populates="scores")
    model_version: Mapped[ModelVersion] = relationship()


class HumanScore(Base):
    """A person's label for an image on a scale (`scheme`): a correction, or imported."""

    __tablename__ = "human_scores"

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(64))
    scheme: Mapped[str] = mapped_column(String(16))
    who: Mapped[str] = mapped_column(String(128), default="")
    source: Mapped[str] = mapped_column(String(32), default="web")
    # Place in the human-scores feed, in commit order; a changed label takes a new place.
    feed_seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Heatmap(Base):
    """A cached SmoothGrad PNG for (image, model version, class, parameters)."""

    __tablename__ = "heatmaps"
    __table_args__ = (
        UniqueConstraint("image_id", "model_version_id", "class_label", "params_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE")
    )
    class_label: Mapped[str] = mapped_column(String(64))
    params_key: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    path: Mapped[str] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Upload(Base):
    """A robot or edge-agent request already answered, kept by its idempotency key, which is
    scoped per token (`scope`: one token's key never replays another token's answer)."""

    __tablename__ = "uploads"
    __table_args__ = (UniqueConstraint("scope", "idempotency_key", name="uq_uploads_scope_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(80), default="")
    idempotency_key: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    request_sha256: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ApiToken(Base):
    """A bearer token with one role; only its SHA-256 is stored (the token is shown once)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)


class FeedCounter(Base):
    """The last position handed out on one feed (scores, human_scores). Claiming positions
    locks the row until commit, so positions are in commit order."""

    __tablename__ = "feed_counters"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)
