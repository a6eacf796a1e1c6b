"""MARCO scores as ISPyB auto-scores: the class mapping, SynchWeb's view, and the export.

ISPyB (DiamondLightSource/ispyb-database) keeps auto-scores per sample image, known by its
unique `imageFullPath`, under a schema ('MARCO') with the classes clear, crystal,
precipitant and other; Diamond writes them with the MariaDB procedure
`upsert_sample_image_auto_score(imageFullPath, schemaName, scoreClass, probability)`.

Classes are mapped by NAME, never by position: our four labels sort Clear, Crystals,
Other, Precipitate, ISPyB's classes do not, and mapping by index mislabels them.
A ten-way (Merck) score is summed into the four classes first (`labels.to_four`); a model
with both heads exports its own four-way head.
"""

from __future__ import annotations

import logging
import math
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from marco_svc.db.models import Image, ImageStatus, Inspection, Plate, Score
from marco_svc.labels import MARCO4_LABELS, MERCK10_LABELS, to_four
from marco_svc.queries import latest_scores

log = logging.getLogger(__name__)

# Our four-way label -> ISPyB's scoreClass of the MARCO schema, in ISPyB's class order.
ISPYB_CLASSES: Mapping[str, str] = {
    "Clear": "clear",
    "Crystals": "crystal",
    "Precipitate": "precipitant",
    "Other": "other",
}
SCHEMA_NAME = "MARCO"
PROCEDURE = "upsert_sample_image_auto_score"

# Slack for float sums (ten float32 probabilities) before a probability counts as out of range.
_TOLERANCE = 1e-6
_BATCH = 500


class ISPyBError(RuntimeError):
    """The ISPyB database could not be reached, or refused a call."""


def ispyb_classes(probabilities: Mapping[str, float]) -> dict[str, float]:
    """Four-way or ten-way probabilities -> {clear, crystal, precipitant, other: p}, by name.

    A ten-way score is summed into the four classes; when both heads are present (a
    two-head model) the four-way head is used. Unknown labels, an empty mapping or a value
    that is not a finite number raise ValueError.
    """
    if not probabilities:
        raise ValueError("no probabilities to map")
    unknown = sorted(set(probabilities) - set(MARCO4_LABELS) - set(MERCK10_LABELS))
    if unknown:
        raise ValueError(f"unknown label(s) {', '.join(map(repr, unknown))}")
    values: dict[str, float] = {}
    for label, p in probabilities.items():
        try:
            values[label] = float(p)
        except (TypeError, ValueError):
            raise ValueError(f"probability of {label!r} is not a number: {p!r}") from None
        if not math.isfinite(values[label]):
            raise ValueError(f"probability of {label!r} is not finite: {p!r}")
    four_way = {label: p for label, p in values.items() if label in MARCO4_LABELS}
    four = to_four(four_way or values)
    return {ispyb: four[label] for label, ispyb in ISPYB_CLASSES.items()}


def _scores(
    session: Session, image_ids: Sequence[int], model_version_id: int | None
) -> dict[int, Score]:
    """Per image: that version's score, or (no version) the latest one (`latest_scores`)."""
    if model_version_id is None:
        return latest_scores(session, image_ids)
    rows = session.scalars(
        select(Score).where(
            Score.image_id.in_(list(image_ids)), Score.model_version_id == model_version_id
        )
    )
    return {score.image_id: score for score in rows}


def _classes_of(image_id: int, uri: str, score: Score) -> dict[str, float]:
    try:
        return ispyb_classes(score.probabilities)
    except ValueError as exc:
        raise ValueError(f"image {image_id} ({uri}): {exc}") from None


def autoscores(
    session: Session, inspection_id: int, model_version_id: int | None = None
) -> list[dict]:
    """The auto-scores of one inspection as SynchWeb reads them from ISPyB:
    `[{BLSAMPLEIMAGEID, IMAGEFULLPATH, CLASSES: {clear, crystal, precipitant, other}}]`,
    one entry per scored (not failed) image, by image id. BLSAMPLEIMAGEID is our image id.
    With `model_version_id` only that version's scores count, else each image's latest.
    """
    images = session.execute(
        select(Image.id, Image.uri)
        .where(Image.inspection_id == inspection_id, Image.status != ImageStatus.FAILED)
        .order_by(Image.id)
    ).all()
    scores = _scores(session, [image_id for image_id, _ in images], model_version_id)
    return [
        {
            "BLSAMPLEIMAGEID": image_id,
            "IMAGEFULLPATH": uri,
            "CLASSES": _classes_of(image_id, uri, scores[image_id]),
        }
        for image_id, uri in images
        if image_id in scores
    ]


@dataclass(frozen=True)
class AutoScoreRow:
    """The arguments of one `upsert_sample_image_auto_score` call."""

    image_full_path: str
    schema_name: str
    score_class: str
    probability: float


def _prefix(path: str) -> str:
    return path if path.endswith("/") else path + "/"


def map_path(path: str, path_map: tuple[str, str] | None) -> str | None:
    """`path` with the folder OLD replaced by NEW (whole path components only: OLD=/data
    does not touch /database/x); None when the path is not under OLD."""
    if path_map is None:
        return path
    old, new = path_map
    if path == old.rstrip("/"):
        return new.rstrip("/") or "/"
    if path.startswith(_prefix(old)):
        return _prefix(new) + path[len(_prefix(old)) :]
    return None


def export_rows(
    session: Session,
    barcode: str | None = None,
    model_version_id: int | None = None,
    path_map: tuple[str, str] | None = None,
) -> Iterator[AutoScoreRow]:
    """Four rows (clear, crystal, precipitant, other) per scored image, by image id: every
    plate's or one plate's (`barcode`), each image's latest score or that of one model
    version. Failed images are skipped. `path_map` (OLD, NEW) rewrites the paths to the ones
    ISPyB knows; a path not under OLD is kept as it is (and counted in a warning).

    The plate and the path map are checked at once (ValueError); the rows are read in
    batches while iterating, so the session must stay open until the iterator is done.
    """
    plate_id = None
    if barcode is not None:
        plate_id = session.scalar(select(Plate.id).where(Plate.barcode == barcode))
        if plate_id is None:
            raise ValueError(f"no plate {barcode!r}")
    if path_map is not None and not (len(path_map) == 2 and all(path_map)):
        raise ValueError(f"path map {path_map!r}: expected (OLD_PREFIX, NEW_PREFIX), both set")
    return _rows(session, plate_id, model_version_id, path_map)


def _rows(
    session: Session,
    plate_id: int | None,
    model_version_id: int | None,
    path_map: tuple[str, str] | None,
) -> Iterator[AutoScoreRow]:
    scored = exists().where(Score.image_id == Image.id)
    if model_version_id is not None:
        scored = scored.where(Score.model_version_id == model_version_id)
    query = select(Image.id, Image.uri).where(Image.status != ImageStatus.FAILED, scored)
    if plate_id is not None:
        query = query.join(Inspection, Image.inspection_id == Inspection.id).where(
            Inspection.plate_id == plate_id
        )
    last_id, unmapped = 0, 0
    while True:
        batch = session.execute(
            query.where(Image.id > last_id).order_by(Image.id).limit(_BATCH)
        ).all()
        if not batch:
            break
        last_id = batch[-1][0]
        scores = _scores(session, [image_id for image_id, _ in batch], model_version_id)
        for image_id, uri in batch:
            score = scores.get(image_id)
            if score is None:
                continue
            classes = _classes_of(image_id, uri, score)
            path = map_path(uri, path_map)
            if path is None:
                unmapped += 1
                path = uri
            for score_class, probability in classes.items():
                yield AutoScoreRow(path, SCHEMA_NAME, score_class, probability)
    if unmapped and path_map is not None:
        log.warning(
            "%d image path(s) not under %s kept as they are (ISPyB may not know them)",
            unmapped,
            path_map[0],
        )


def _checked_text(text: str, what: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"{what} is not text: {text!r}")
    for char in text:
        if unicodedata.category(char) == "Cc":  # NUL, C0, DEL and C1 controls
            raise ValueError(f"{what} {text!r} holds a control character ({ord(char):#04x})")
    return text


def _checked_probability(p: float, path: str) -> float:
    try:
        value = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: probability {p!r} is not a number") from None
    if not math.isfinite(value) or not -_TOLERANCE <= value <= 1 + _TOLERANCE:
        raise ValueError(f"{path}: probability {p!r} is not between 0 and 1")
    return min(max(value, 0.0), 1.0)


def _checked(row: AutoScoreRow) -> AutoScoreRow:
    return AutoScoreRow(
        _checked_text(row.image_full_path, "image path"),
        _checked_text(row.schema_name, "schema name"),
        _checked_text(row.score_class, "score class"),
        _checked_probability(row.probability, row.image_full_path),
    )


def sql_string(text: str) -> str:
    """A MariaDB/MySQL string literal: backslash doubled, quote doubled; control characters
    (NUL among them) are refused (ValueError)."""
    _checked_text(text, "string")
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def write_sql(rows: Iterable[AutoScoreRow], out: TextIO) -> int:
    """Write one `CALL upsert_sample_image_auto_score(...)` per row, in one transaction,
    for the mysql/mariadb client (default sql_mode: backslash escapes on; UTF-8).

    Every row is checked before anything is written: a string with a control character or
    a probability outside [0, 1] raises ValueError and leaves `out` untouched.
    Returns the number of rows written.
    """
    calls = []
    for row in rows:
        row = _checked(row)
        calls.append(
            f"CALL {PROCEDURE}({sql_string(row.image_full_path)}, {sql_string(row.schema_name)}, "
            f"{sql_string(row.score_class)}, {row.probability:.6f});\n"
        )
    from marco_svc import __version__

    when = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    out.write(
        f"-- {len(calls)} MARCO auto-score(s) for ISPyB ({PROCEDURE}), "
        f"written by marco-svc {__version__} at {when}\n"
        "SET NAMES utf8mb4;\n"
        "START TRANSACTION;\n"
    )
    out.writelines(calls)
    out.write("COMMIT;\n")
    return len(calls)


def call_procedure(url: str, rows: Iterable[AutoScoreRow]) -> int:
    """Call `upsert_sample_image_auto_score` with bound parameters for every row, in one
    transaction, on the database at `url` (an SQLAlchemy URL; ISPyB is MariaDB, e.g.
    mysql+pymysql://USER:PASSWORD@HOST/ispyb, with the driver installed by the user).
    Returns the number of calls. A bad URL or missing driver raises ValueError; a database
    that cannot be reached or refuses a call raises ISPyBError (nothing is kept then).
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    from marco_svc.errors import first_line

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(
            "malformed ISPyB database URL: expected e.g. mysql+pymysql://USER:PASSWORD@HOST/ispyb"
        ) from None
    if parsed.drivername == "postgresql":  # as for database_url: psycopg 3 is installed
        parsed = parsed.set(drivername="postgresql+psycopg")
    shown = parsed.render_as_string(hide_password=True)
    try:
        engine = create_engine(parsed)
    except (NoSuchModuleError, ImportError) as exc:
        raise ValueError(
            f"cannot open {shown}: {first_line(exc)} (install its driver, e.g. pymysql)"
        ) from None
    statement = text(f"CALL {PROCEDURE}(:path, :schema, :cls, :p)")
    count = 0
    try:
        with engine.begin() as connection:
            for row in rows:
                row = _checked(row)
                connection.execute(
                    statement,
                    {
                        "path": row.image_full_path,
                        "schema": row.schema_name,
                        "cls": row.score_class,
                        "p": row.probability,
                    },
                )
                count += 1
    except SQLAlchemyError as exc:
        raise ISPyBError(f"ISPyB database {shown}: {first_line(exc)}") from exc
    finally:
        engine.dispose()
    return count
