"""POST /api/v1/inspections: an imaging robot uploads one inspection's images.

multipart/form-data: a part `metadata` (JSON, as a field or a file; the manifest shape of
`imager_adapters.manifest`) and one file part per image, each named by an entry's
`file` (the part's field name, or else its filename). Each file is stored under
`<data_dir>/uploads/<sha256[:2]>/<sha256><suffix>` (content-addressed, written
atomically, shared by identical bytes sent for several drops: each drop slot is still
its own image) and goes through `marco_svc.ingest.ingest` as watched files do; created
images are queued for scoring.

Answers: 201 (something new) or 200 (all already stored) with one result per image
(outcome created / duplicate / failed, image id, reason); a bad image is a recorded
failure and the others still land. Problems (RFC 9457): 401/403 (token), 413 (over
upload_max_bytes, or more images than upload_max_images), 422 (metadata missing or
invalid, a file it does not name or a name without a file, an Idempotency-Key reused
with another request). `Idempotency-Key`: the same key with the same request (same
metadata, same files) replays the stored answer (header `Idempotent-Replayed: true`);
with a different request it is 422, as the IETF idempotency-key draft says.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flask import request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser

from imager_adapters.manifest import ManifestEntry, ManifestError, parse_manifest
from marco_svc.api.access import Permission, current_caller, guarded
from marco_svc.api.context import db_session, runtime
from marco_svc.api.params import ApiBlueprint
from marco_svc.api.problems import Problem, problem_doc
from marco_svc.api.shapes import UploadResult
from marco_svc.db.models import Upload
from marco_svc.file_store import store_content
from marco_svc.ingest import ingest
from marco_svc.ingest_files import file_policy

blueprint = ApiBlueprint("uploads", __name__, description="Robot uploads of inspections")
KIND = "inspection"
CHUNK = 1024 * 1024
DISAGREE = "Files and metadata disagree"
METADATA_MAX_BYTES = 16 * 1024 * 1024
Part = tuple[str, FileStorage]


class _ClosingFormDataParser(FormDataParser):
    """Closes the parts already spooled when a limit stops the parse midway (werkzeug
    leaves them to the garbage collector)."""

    def __init__(self, stream_factory: Any = None, **kwargs: Any) -> None:
        self._opened: list[Any] = []

        def tracked(*args: Any, **kw: Any) -> Any:
            stream = stream_factory(*args, **kw)
            self._opened.append(stream)
            return stream

        super().__init__(tracked, **kwargs)

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().parse(*args, **kwargs)
        except BaseException:
            for stream in self._opened:
                stream.close()
            raise


def _too_large(detail: str) -> Problem:
    return Problem(413, "Upload too large", detail)


def _limits() -> tuple[int, int]:
    settings = runtime().settings
    max_bytes, max_images = settings.upload_max_bytes, settings.upload_max_images
    if request.content_length is not None and request.content_length > max_bytes:
        raise _too_large(
            f"the request has {request.content_length} bytes; the limit is {max_bytes} "
            "(setting upload_max_bytes)"
        )
    request.max_content_length = max_bytes
    request.max_form_parts = max_images + 16
    request.max_form_memory_size = METADATA_MAX_BYTES
    request.form_data_parser_class = _ClosingFormDataParser
    return max_bytes, max_images


def _form(max_bytes: int, max_images: int) -> tuple[Any, list[Part]]:
    """The metadata (parsed JSON) and the file parts."""
    try:
        form, files = request.form, request.files
    except RequestEntityTooLarge:
        raise _too_large(
            f"over a limit: {max_bytes} bytes (setting upload_max_bytes) or "
            f"{max_images} images (setting upload_max_images)"
        ) from None
    if "metadata" in files:
        text = files["metadata"].stream.read(METADATA_MAX_BYTES + 1)
    elif "metadata" in form:
        text = form["metadata"].encode()
    else:
        raise Problem(422, "Invalid metadata", "no part 'metadata' (JSON) in the request")
    try:
        metadata = json.loads(text)
    except ValueError as exc:  # not JSON, not UTF-8, or an integer of over 4,300 digits
        raise Problem(422, "Invalid metadata", f"metadata is not JSON: {exc}") from None
    except RecursionError:
        raise Problem(422, "Invalid metadata", "metadata is nested too deeply") from None
    parts = [(field, storage) for field, storage in files.items(multi=True) if field != "metadata"]
    return metadata, parts


def _pair(entries: list[ManifestEntry], parts: list[Part]) -> list[tuple[ManifestEntry, Part]]:
    """Each entry with its file part, by field name or else filename; 422 when not 1:1."""
    by_field: defaultdict[str, list[int]] = defaultdict(list)
    by_name: defaultdict[str, list[int]] = defaultdict(list)
    for index, (field, storage) in enumerate(parts):
        by_field[field].append(index)
        if storage.filename:
            by_name[storage.filename].append(index)
    taken: dict[int, int] = {}
    pairs = []
    for n, entry in enumerate(entries):
        pools = (by_field.get(entry.file, []), by_name.get(entry.file, []))
        chosen = next((pool[0] for pool in pools if len(pool) == 1), None)
        if chosen is None:
            what = "several parts" if any(pools) else "no file in the request"
            raise Problem(422, DISAGREE, f"images[{n}].file {entry.file!r}: {what}")
        if chosen in taken:
            raise Problem(
                422,
                DISAGREE,
                f"images[{n}].file {entry.file!r} is the file of images[{taken[chosen]}] too",
            )
        taken[chosen] = n
        pairs.append((entry, parts[chosen]))
    for index, (field, storage) in enumerate(parts):
        if index not in taken:
            raise Problem(
                422,
                DISAGREE,
                f"part {field!r} (file {storage.filename!r}) is not named in the metadata",
            )
    return pairs


def _digest(storage: FileStorage) -> str:
    sha = hashlib.sha256()
    storage.stream.seek(0)
    while chunk := storage.stream.read(CHUNK):
        sha.update(chunk)
    storage.stream.seek(0)
    return sha.hexdigest()


def _chunks(storage: FileStorage) -> Iterator[bytes]:
    storage.stream.seek(0)
    while chunk := storage.stream.read(CHUNK):
        yield chunk


def _save(storage: FileStorage, digest: str, folder: Path) -> Path:
    """Store the part at its content address, atomically (a reader never sees half a file).
    Identical bytes share the file; the images (one per drop slot) are separate rows."""
    return store_content(folder, digest, storage.filename or "", _chunks(storage))


def _request_sha(metadata: Any, pairs: list[tuple[ManifestEntry, Part]], digests: list[str]) -> str:
    """What makes two requests the same: the metadata and each named file's content."""
    files = sorted(
        (entry.file, storage.filename or "", digest)
        for (entry, (_, storage)), digest in zip(pairs, digests, strict=True)
    )
    canonical = json.dumps({"metadata": metadata, "files": files}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= 255 and key.isascii() and key.isprintable()):
        raise Problem(422, "Invalid Idempotency-Key", "use 1 to 255 printable ASCII characters")
    return key


def _replay(
    scope: str, key: str, request_sha: str
) -> tuple[dict[str, Any], int, dict[str, str]] | None:
    with db_session() as session:
        stored = session.scalar(
            select(Upload).where(Upload.scope == scope, Upload.idempotency_key == key)
        )
    if stored is None:
        return None
    if stored.kind != KIND or stored.request_sha256 != request_sha:
        raise Problem(
            422,
            "Idempotency-Key reused",
            f"Idempotency-Key {key!r} was used for a different request; use a new key",
        )
    return stored.response, stored.status_code, {"Idempotent-Replayed": "true"}


UPLOAD_FORM = {
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["metadata"],
                "properties": {
                    "metadata": {"type": "string", "description": "the manifest, as JSON"}
                },
                "additionalProperties": {"type": "string", "format": "binary"},
            }
        }
    }
}


@blueprint.route("/inspections", methods=["POST"])
@guarded(blueprint, Permission.UPLOAD)
@blueprint.doc(requestBody=UPLOAD_FORM)
@blueprint.response(201, UploadResult, description="something new was stored")
@blueprint.alt_response(200, schema=UploadResult, description="everything was already stored")
@blueprint.alt_response(413, **problem_doc("over upload_max_bytes or upload_max_images"))
def upload_inspection():
    """Upload one inspection's images with their manifest (see the module docs); the
    `Idempotency-Key` header makes a retry safe (keys are scoped per token)."""
    scope = current_caller().scope
    max_bytes, max_images = _limits()
    key = _idempotency_key()
    metadata, parts = _form(max_bytes, max_images)
    if len(parts) > max_images:
        raise _too_large(
            f"{len(parts)} images; the limit is {max_images} (setting upload_max_images)"
        )
    try:
        entries = parse_manifest(metadata)
    except ManifestError as exc:
        raise Problem(422, "Invalid metadata", str(exc)) from None
    pairs = _pair(entries, parts)
    digests = [_digest(storage) for _, (_, storage) in pairs]
    request_sha = _request_sha(metadata, pairs, digests)
    if key is not None and (replay := _replay(scope, key, request_sha)) is not None:
        return replay

    rt = runtime()
    folder = rt.settings.resolved_data_dir / "uploads"
    policy = file_policy(rt.settings)
    results = []
    for (entry, (_, storage)), digest in zip(pairs, digests, strict=True):
        path = _save(storage, digest, folder)
        result = ingest(rt.db, entry.record(path, "upload"), policy)
        results.append(
            {
                "file": entry.file,
                "filename": storage.filename,
                "well": entry.well,
                "drop": entry.drop,
                "imaging_mode": entry.imaging_mode,
                "sha256": digest,
                "outcome": result.outcome,
                "image_id": result.image_id,
                "reason": result.reason,
            }
        )
    rt.scoring_queue.put(r["image_id"] for r in results if r["outcome"] == "created")
    first = entries[0]
    counts = Counter(r["outcome"] for r in results)
    body = {
        "barcode": first.barcode,
        "plate_type": first.plate.name if first.plate else None,
        "imaged_at": first.imaged_at.isoformat(),
        "imager": first.imager,
        "inspection_id": first.inspection_id,
        "counts": {o: counts[o] for o in ("created", "duplicate", "failed")},
        "images": results,
    }
    status = 201 if counts["created"] else 200
    if key is not None:
        try:
            with db_session() as session:
                session.add(
                    Upload(
                        scope=scope,
                        idempotency_key=key,
                        kind=KIND,
                        request_sha256=request_sha,
                        status_code=status,
                        response=body,
                    )
                )
        except IntegrityError:  # the same key answered meanwhile (a concurrent retry)
            replay = _replay(scope, key, request_sha)
            if replay is not None:
                return replay
            raise
    return body, status
