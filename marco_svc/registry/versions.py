"""Model versions in the database, and the one answer to "which model scores now".

Each model folder is mirrored as a `ModelVersion` row (`upsert_version`); one row may be
active (`activate`, a person's decision, never a side effect of scoring). `resolve` says
which model to use: a reference, else the `model` setting, else the active row, else the
shipped default; `scoring_version_id` is that model's row, for queries (the hits feed,
heatmaps) that must speak of the model that scores now.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from marco_svc.config import Settings
from marco_svc.nets.card import ModelCard
from marco_svc.registry.store import (
    PRIMARY_FORMATS,
    ModelStoreError,
    StoredModel,
    default_shipped,
    find,
    parse_ref,
)

if TYPE_CHECKING:  # SQLAlchemy is imported only where a database is used (not on the edge)
    from marco_svc.db.session import Database

log = logging.getLogger(__name__)


def active_version(db: Database) -> tuple[str, str] | None:
    """(name, version) of the active ModelVersion row, if any."""
    from sqlalchemy import select

    from marco_svc.db.models import ModelVersion

    with db.session() as session:
        row = session.execute(
            select(ModelVersion.name, ModelVersion.version).where(ModelVersion.active)
        ).first()
    return (row[0], row[1]) if row else None


def existing_database(settings: Settings) -> Database | None:
    """The configured database if it exists (never created here); None on an edge install."""
    try:
        from marco_svc.db.session import Database, parse_database_url
    except ImportError:  # an edge install has no database
        return None
    url = parse_database_url(settings.resolved_database_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return None
    return Database(settings.resolved_database_url)


def _configured_active(settings: Settings) -> tuple[str, str] | None:
    """Read the active version from the configured database if it exists; never create it."""
    db = existing_database(settings)
    if db is None:
        return None
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return active_version(db)
    except SQLAlchemyError as exc:
        log.debug("no active model from the database: %s", exc)
        return None
    finally:
        db.dispose()


def resolve(
    settings: Settings,
    ref: str = "",
    db: Database | None = None,
    shipped_dir: Path | None = None,
) -> StoredModel:
    """The model to use: `ref`, else the `model` setting, else the active version in the
    database (`db`, or the configured one when it exists, read only), else the shipped default.
    """
    if ref:
        return find(settings, ref, shipped_dir)
    if settings.model:
        return find(settings, settings.model, shipped_dir)
    active = active_version(db) if db is not None else _configured_active(settings)
    if active is not None:
        return find(settings, f"{active[0]}:{active[1]}", shipped_dir)
    default = default_shipped(shipped_dir)
    if default is None:
        raise ModelStoreError("no model: pass --model or register/import one")
    return default


def scoring_version_id(settings: Settings, db: Database) -> int | None:
    """The ModelVersion id of the model that scores now (see `resolve`), its row written
    when missing; None when no model can score."""
    try:
        model = resolve(settings, db=db)
    except ModelStoreError:
        return None
    return upsert_version(db, model)


def _primary(card: ModelCard, folder: Path) -> tuple[str, str]:
    for fmt in PRIMARY_FORMATS:
        if fmt in card.artifacts:
            artifact = card.artifacts[fmt]
            return (folder / artifact.file).resolve().as_uri(), artifact.sha256
    return folder.resolve().as_uri(), ""


def upsert_version(db: Database, model: StoredModel) -> int:
    """Insert or update the ModelVersion row of a model (its `active` flag is kept)."""
    from sqlalchemy import select

    from marco_svc.db.models import ModelVersion

    card = model.card
    uri, sha256 = _primary(card, model.folder)
    fields = {
        "architecture": card.architecture,
        "scheme": card.scheme,
        "labels": card.labels,
        "artifact_uri": uri,
        "artifact_sha256": sha256,
        "card": card.to_dict(),
        "metrics": card.metrics,
    }
    with db.session() as session:
        row = session.execute(
            select(ModelVersion).where(
                ModelVersion.name == card.name, ModelVersion.version == card.version
            )
        ).scalar_one_or_none()
        if row is None:
            row = ModelVersion(name=card.name, version=card.version, active=False, **fields)
            session.add(row)
        else:
            for key, value in fields.items():
                setattr(row, key, value)
        session.flush()
        return row.id


def activate(db: Database, ref: str) -> tuple[str, str]:
    """Make exactly one ModelVersion active (a bare NAME means its newest row)."""
    from sqlalchemy import select, update

    from marco_svc.db.models import ModelVersion

    name, version = parse_ref(ref)
    with db.session() as session:
        query = select(ModelVersion).where(ModelVersion.name == name)
        if version is not None:
            query = query.where(ModelVersion.version == version)
        rows = session.execute(query.order_by(ModelVersion.created_at.desc())).scalars().all()
        if not rows:
            raise ModelStoreError(f"no model version {ref!r} in the database")
        chosen = rows[0]
        session.execute(
            update(ModelVersion).where(ModelVersion.id != chosen.id).values(active=False)
        )
        chosen.active = True
        return chosen.name, chosen.version
