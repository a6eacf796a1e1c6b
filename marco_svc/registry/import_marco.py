"""Register the official MARCO model: rebuilt and verified by `nets.import_marco`, stored as
an ordinary model version (`model.keras` and its card) in the registry."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from marco_svc.config import Settings
from marco_svc.nets.architectures import new_card
from marco_svc.nets.import_marco import (
    TOLERANCE,
    Comparison,
    ImportRefused,
    rebuild_and_verify,
    sample_images,
)
from marco_svc.registry.store import ModelStoreError, StoredModel, find, register
from marco_svc.registry.versions import upsert_version

if TYPE_CHECKING:
    from marco_svc.db.session import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportResult:
    model: StoredModel
    comparison: Comparison
    already_registered: bool = False  # the same official weights were imported before


def _already_imported(
    settings: Settings, name: str, version: str, variables_sha256: str
) -> StoredModel | None:
    try:
        model = find(settings, f"{name}:{version}")
    except ModelStoreError:
        return None
    same = model.card.provenance.get("source_variables_sha256") == variables_sha256
    if model.where != "registry" or not same:
        raise ImportRefused(f"{name}:{version} is already registered as another model")
    return model


def import_marco(
    source: Path,
    settings: Settings,
    *,
    name: str = "marco",
    images: Sequence[bytes] | None = None,
    images_from: str = "",
    db: Database | None = None,
    progress: Callable[[str], None] = log.info,
) -> ImportResult:
    """Import, verify and register the official MARCO model; ImportRefused says why not."""
    from marco_svc.nets.marco_inception import ARCHITECTURE

    source = Path(source)
    if images is None:
        images, images_from = sample_images(), "generated: 8 synthetic JPEG drops and noise"
    verified = rebuild_and_verify(source, images, progress)
    comparison = verified.comparison
    version = verified.variables_sha256[:12]
    existing = _already_imported(settings, name, version, verified.variables_sha256)
    if existing is not None:
        if db is not None:
            upsert_version(db, existing)
        return ImportResult(existing, comparison, already_registered=True)
    with tempfile.TemporaryDirectory(prefix="marco-import-") as tmp:
        staging = Path(tmp)
        verified.model.save(staging / "model.keras")
        card = new_card(
            ARCHITECTURE,
            name,
            version,
            provenance={
                "source": str(source.resolve()),
                "source_variables_sha256": verified.variables_sha256,
                "source_saved_model_sha256": verified.saved_model_sha256,
                "source_signature": verified.signature,
                "imported_by": "marco-svc models import-marco",
                "compared_images": comparison.images,
                "compared_images_from": images_from,
                "max_abs_difference": comparison.max_abs_difference,
                "tolerance": TOLERANCE,
                "official_probability_range": list(comparison.probability_range),
                "licence": "the official MARCO model: Apache-2.0",
            },
            notes="The official MARCO model (Bruno et al. 2018), imported variable for variable.",
        )
        card.add_artifact("keras", staging, "model.keras")
        card.save(staging)
        stored = register(settings, staging, db=db)
    return ImportResult(stored, comparison)
