"""Results an edge agent scored on the imager PC, stored as ordinary scores, exactly once.

The agent runs the server's model (a TFLite artifact of a registered model version) next to
the imager, and forwards each result with its own idempotency key. Each result becomes what
a server-side score makes: the image through `marco_svc.ingest.ingest_remote` (the one
ingest path; the file stays on the imager PC and is known as `edge://<imager>/<path>`),
then its Score through `scoring.store.save_scores(..., source="edge")` under the lab's
crystal rules (`crystal_rule`, `lab_rules`), so hits are decided as for every other score
and the page and the LIMS feeds cannot tell the two apart. The image's file stays on the
imager PC until someone asks for it; `marco_svc.edge_wanted` remembers which agent (token
scope) holds it, and asks that agent for it.

Exactly once, per result:
- a key this token already sent (kept per token scope in the Upload table, kind
  "edge-result", with the sha256 of the result) answers `duplicate` with its image and
  stores nothing; the same key with other content fails ("use a new key"), as an upload's
  Idempotency-Key does;
- a new key for an image (same drop slot and content) that already has a score from that
  model version is `duplicate` too: the stored score stays, and keeps its feed position;
- only `stored` and `duplicate` results are remembered: a failed one may be sent again
  with the same key once its cause is fixed (a model registered, a barcode corrected).

A result fails, with its reason, when its model is not a registered version whose card
lists an artifact with the given sha256 ("unknown model or model file"), when its
probabilities are not that model's labels or its top class is not the most probable one,
when its metadata is refused (ingest records a failed image, as for any source), or when
the lab's rule cannot be applied. One failure never stops the others.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from imager_adapters.record import ImageRecord
from imager_adapters.wells import GeometryError, parse_plate_type
from marco_svc import edge_wanted, registry
from marco_svc.db.models import ModelVersion, Score, Upload
from marco_svc.ingest import ingest_remote
from marco_svc.labels import MARCO4, MERCK10
from marco_svc.runtime import Runtime
from marco_svc.scoring.lab_rules import LabRules
from marco_svc.scoring.rules import RuleError
from marco_svc.scoring.store import ScoreResult, save_scores

KIND = "edge-result"
SOURCE = "edge"
ADAPTER = "edge"
UNKNOWN_MODEL = "unknown model or model file"
MAX_QUALITY_BYTES = 64 * 1024
Outcome = Literal["stored", "duplicate", "failed"]


@dataclass(frozen=True)
class EdgeModel:
    """The model the agent scored with: a registered version and the sha256 of its file."""

    name: str
    version: str
    sha256: str

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class EdgeResult:
    """One image the agent scored (see the module docs)."""

    key: str
    barcode: str
    well: str
    drop: int
    imaged_at: datetime
    imager: str
    path: str
    sha256: str
    size_bytes: int
    width: int
    height: int
    model: EdgeModel
    probabilities: dict[str, float]
    top_class: str
    latency_ms: float
    imaging_mode: str = "visible"
    plate_type: str | None = None
    quality: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EdgeResult:
        return cls(**{**data, "model": EdgeModel(**data["model"])})

    def content_sha256(self) -> str:
        """What makes two sends of one key the same result: every field but the key."""
        content = asdict(self)
        del content["key"]
        content["imaged_at"] = self.imaged_at.isoformat()
        content["sha256"] = self.sha256.lower()
        content["model"]["sha256"] = self.model.sha256.lower()
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class ResultOutcome:
    key: str
    outcome: Outcome
    image_id: int | None = None
    reason: str | None = None


class _Failed(Exception):
    """One result that cannot be stored; `image_id`: the failed image ingest recorded."""

    def __init__(self, reason: str, image_id: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.image_id = reason, image_id


class _Batch:
    """One request's results, for one token scope."""

    def __init__(self, runtime: Runtime, scope: str, keys: Sequence[str]) -> None:
        self.db, self.settings, self.scope = runtime.db, runtime.settings, scope
        self.rules = LabRules.parse(self.settings.crystal_rule, self.settings.lab_rules)
        self.models: dict[str, ModelVersion | None] = {}
        with self.db.session() as session:
            rows = session.scalars(
                select(Upload).where(
                    Upload.scope == scope, Upload.idempotency_key.in_(sorted(set(keys)))
                )
            ).all()
        self.sent: dict[str, tuple[str, str, dict[str, Any]]] = {
            row.idempotency_key: (row.kind, row.request_sha256, row.response) for row in rows
        }

    def _recalled(self, key: str, sha: str) -> ResultOutcome | None:
        """The answer to a key already sent, if it was."""
        if key not in self.sent:
            return None
        kind, stored_sha, response = self.sent[key]
        if kind != KIND or stored_sha != sha:
            reason = f"key {key!r} was used for a different request; use a new key"
            return ResultOutcome(key, "failed", None, reason)
        return ResultOutcome(key, "duplicate", response.get("image_id"), None)

    def _version(self, ref: str) -> ModelVersion | None:
        """The registered version `ref` (its row written from the registry when missing)."""
        if ref not in self.models:
            self.models[ref] = self._lookup(ref)
        return self.models[ref]

    def _lookup(self, ref: str) -> ModelVersion | None:
        name, version = ref.split(":", 1)
        query = select(ModelVersion).where(
            ModelVersion.name == name, ModelVersion.version == version
        )
        with self.db.session() as session:
            row = session.scalar(query)
        if row is not None:
            return row
        try:  # a registered or shipped folder whose row is not written yet
            stored = registry.find(self.settings, ref)
        except registry.ModelStoreError:
            return None
        if stored.where == "path" or stored.ref != ref:
            return None
        registry.upsert_version(self.db, stored)
        with self.db.session() as session:
            return session.scalar(query)

    def _model(self, result: EdgeResult) -> ModelVersion:
        model = self._version(result.model.ref)
        if model is None:
            raise _Failed(f"{UNKNOWN_MODEL}: no model version {result.model.ref} on the server")
        artifacts = (model.card or {}).get("artifacts", {})
        wanted = result.model.sha256.lower()
        if not any(a.get("sha256") == wanted for a in artifacts.values()):
            raise _Failed(
                f"{UNKNOWN_MODEL}: {result.model.ref} has no artifact with sha256 {wanted}"
            )
        return model

    @staticmethod
    def _check_output(result: EdgeResult, model: ModelVersion) -> None:
        """The probabilities are the model's labels, the top class the finest head's best."""
        labels = list(model.labels or [])
        if sorted(result.probabilities) != sorted(labels):
            sent = [label[:40] for label in sorted(result.probabilities)[:20]]
            raise _Failed(
                f"probabilities: {model.name}:{model.version} gives the labels {labels}, not {sent}"
            )
        heads = (model.card or {}).get("heads", {})
        finest = heads.get(MERCK10) or heads.get(MARCO4) or labels
        best = max(result.probabilities[label] for label in finest)
        if result.top_class not in finest or result.probabilities[result.top_class] < best:
            raise _Failed(
                f"top_class: {result.top_class!r} is not the most probable label of "
                f"{', '.join(finest)}"
            )

    @staticmethod
    def _check_quality(quality: dict[str, Any]) -> None:
        try:
            size = len(json.dumps(quality, ensure_ascii=False).encode("utf-8"))
        except (UnicodeEncodeError, ValueError) as exc:
            raise _Failed(f"quality: not storable JSON ({exc.__class__.__name__})") from None
        if size > MAX_QUALITY_BYTES:
            raise _Failed(f"quality: {size} bytes; at most {MAX_QUALITY_BYTES}")

    @staticmethod
    def _record(result: EdgeResult) -> ImageRecord:
        plate = None
        if result.plate_type is not None:
            try:
                plate = parse_plate_type(result.plate_type)
            except GeometryError as exc:
                raise _Failed(f"invalid metadata: plate_type: {exc}") from None
        moment = result.imaged_at
        try:
            if moment.tzinfo is not None:
                moment.astimezone(UTC)
        except OverflowError:
            raise _Failed("invalid metadata: imaged_at: out of range in UTC") from None
        return ImageRecord(
            path=Path(result.path),
            barcode=result.barcode,
            well=result.well,
            drop=result.drop,
            inspected_at=moment,
            imager=result.imager,
            imaging_mode=result.imaging_mode,
            plate_wells=plate.wells if plate else None,
            plate_drops=plate.drops if plate else None,
            adapter=ADAPTER,
        )

    def _image(self, result: EdgeResult) -> tuple[int, bool]:
        """(image id, whether it was already stored)."""
        try:
            ingested = ingest_remote(
                self.db,
                self._record(result),
                sha256=result.sha256.lower(),
                size=result.size_bytes,
                width=result.width,
                height=result.height,
            )
        except ValueError as exc:  # the imager or path, which make the image's uri
            raise _Failed(f"invalid metadata: {exc}") from None
        if ingested.outcome == "failed":
            raise _Failed(ingested.reason or "failed", ingested.image_id)
        edge_wanted.register(self.db, ingested.image_id, self.scope)
        return ingested.image_id, ingested.outcome == "duplicate"

    def _scored(self, image_id: int, model: ModelVersion) -> bool:
        with self.db.session() as session:
            found = session.scalar(
                select(Score.id).where(
                    Score.image_id == image_id, Score.model_version_id == model.id
                )
            )
        return found is not None

    def _store(self, result: EdgeResult) -> ResultOutcome:
        model = self._model(result)
        self._check_output(result, model)
        self._check_quality(result.quality)
        image_id, known = self._image(result)
        if known and self._scored(image_id, model):
            # stored before (a re-send under a new key): the score keeps its feed place
            return ResultOutcome(result.key, "duplicate", image_id)
        score = ScoreResult(
            image_id,
            dict(result.probabilities),
            result.top_class,
            dict(result.quality),
            result.latency_ms,
        )
        try:
            save_scores(
                self.db, model, [score], self.rules, {image_id: result.barcode}, source=SOURCE
            )
        except RuleError as exc:
            raise _Failed(f"crystal rule: {exc}", image_id) from None
        return ResultOutcome(result.key, "stored", image_id)

    def _remember(self, result: EdgeResult, sha: str, done: ResultOutcome) -> ResultOutcome:
        response = {"outcome": done.outcome, "image_id": done.image_id}
        try:
            with self.db.session() as session:
                session.add(
                    Upload(
                        scope=self.scope,
                        idempotency_key=result.key,
                        kind=KIND,
                        request_sha256=sha,
                        status_code=200,
                        response=response,
                    )
                )
        except IntegrityError:  # the same key answered meanwhile (a concurrent re-send)
            with self.db.session() as session:
                row = session.scalar(
                    select(Upload).where(
                        Upload.scope == self.scope, Upload.idempotency_key == result.key
                    )
                )
            if row is None:
                raise
            self.sent[result.key] = (row.kind, row.request_sha256, row.response)
            recalled = self._recalled(result.key, sha)
            return recalled if recalled is not None else done
        self.sent[result.key] = (KIND, sha, response)
        return done

    def one(self, result: EdgeResult) -> ResultOutcome:
        sha = result.content_sha256()
        recalled = self._recalled(result.key, sha)
        if recalled is not None:
            return recalled
        try:
            done = self._store(result)
        except _Failed as exc:
            return ResultOutcome(result.key, "failed", exc.image_id, exc.reason)
        return self._remember(result, sha, done)


def store_results(
    runtime: Runtime, scope: str, results: Sequence[EdgeResult]
) -> list[ResultOutcome]:
    """Store each result once (see the module docs); one outcome per result, in order.
    `scope`: the idempotency scope of the sending token (`Caller.scope`)."""
    batch = _Batch(runtime, scope, [result.key for result in results])
    return [batch.one(result) for result in results]
