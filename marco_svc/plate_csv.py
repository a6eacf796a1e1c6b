"""A plate's scores as CSV: one row per image of every inspection, in time and well order,
with its latest score (or one model version's) and every class probability by name."""

from __future__ import annotations

import csv
import io

from sqlalchemy import select
from sqlalchemy.orm import Session

from marco_svc.db.models import ModelVersion, Plate, Score
from marco_svc.queries import SCORE_MODEL, iso, latest_scores, placed_images

FIXED = (
    "barcode",
    "inspection_id",
    "imaged_at",
    "well",
    "drop",
    "imaging_mode",
    "image_id",
    "status",
    "model",
    "top_class",
    "p_crystal",
    "hit",
)


def plate_scores_csv(session: Session, plate: Plate, model_version_id: int | None) -> str:
    images = list(session.scalars(placed_images(plate_id=plate.id)))
    ids = [image.id for image in images]
    if model_version_id is None:
        scores = latest_scores(session, ids)
    else:
        scores = {
            score.image_id: score
            for score in session.scalars(
                select(Score)
                .options(SCORE_MODEL)
                .where(Score.image_id.in_(ids), Score.model_version_id == model_version_id)
            )
        }
    classes = sorted({label for score in scores.values() for label in score.probabilities})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*FIXED, *(f"p_{label}" for label in classes)])
    for image in images:
        score = scores.get(image.id)
        version: ModelVersion | None = score.model_version if score else None
        writer.writerow(
            [
                plate.barcode,
                image.inspection_id,
                iso(image.inspection.imaged_at) if image.inspection else "",
                image.drop.well if image.drop else "",
                image.drop.drop_number if image.drop else "",
                image.imaging_mode,
                image.id,
                image.status,
                f"{version.name}:{version.version}" if version else "",
                score.top_class if score else "",
                f"{score.p_crystal:.6f}" if score else "",
                int(score.hit) if score else "",
                *(
                    f"{score.probabilities[label]:.6f}"
                    if score and label in score.probabilities
                    else ""
                    for label in classes
                ),
            ]
        )
    return out.getvalue()
