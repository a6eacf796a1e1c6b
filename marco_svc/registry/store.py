"""The model folders: the registry on disk and the models that ship with the code.

A registered model lives in `<data_dir>/models/<name>/<version>/` as `card.json` plus its
artifacts. Models shipped with the code live in the repository's top-level `models/` folder
in the same layout (`models/DEFAULT` may name the default, `NAME[:VERSION]`); a wheel carries
that folder as package data, `marco_svc/_shipped/` (see `SHIPPED_DIR`). A model is
referred to as `NAME`, `NAME:VERSION` (a bare NAME means its newest version), or by the
path of a model folder.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.resources
import logging
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from marco_svc.config import Settings
from marco_svc.nets.card import CARD_FILE, CardError, ModelCard

if TYPE_CHECKING:  # SQLAlchemy is imported only where a database is used (not on the edge)
    from importlib.resources.abc import Traversable

    from marco_svc.db.session import Database

log = logging.getLogger(__name__)

SHIPPED_RESOURCE = "_shipped"  # the repository's models/ in an installed wheel (pyproject.toml)
DEFAULT_FILE = "DEFAULT"
PRIMARY_FORMATS = ("keras", "tflite-fp32", "tflite-fp16", "tflite-int8", "savedmodel")
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


_EXTRACTED = contextlib.ExitStack()  # shipped models extracted from a zip, removed at exit
atexit.register(_EXTRACTED.close)


def _on_disk(folder: Traversable) -> Path:
    """A real folder with the resource folder's files: itself, or (from a zip) a copy."""
    if isinstance(folder, Path):
        return folder
    if sys.version_info >= (3, 12):  # as_file extracts whole folders since 3.12
        return _EXTRACTED.enter_context(importlib.resources.as_file(folder))
    copy = Path(_EXTRACTED.enter_context(tempfile.TemporaryDirectory(prefix="marco-shipped-")))
    stack = [(folder, copy)]
    while stack:
        source, target = stack.pop()
        for item in source.iterdir():
            if item.is_dir():
                (target / item.name).mkdir()
                stack.append((item, target / item.name))
            else:
                (target / item.name).write_bytes(item.read_bytes())
    return copy


def _shipped_dir() -> Path:
    """The folder of the shipped models (and the training presets, `presets/*.toml`).

    An installed wheel has the repository's `models/` as package data in
    `marco_svc/_shipped/`, found with importlib.resources. From a checkout (an editable install
    or PYTHONPATH) it is `models/` itself: setuptools' editable finder does not expose a folder
    mapped into the package that has no `__init__.py`.
    """
    resource = importlib.resources.files("marco_svc") / SHIPPED_RESOURCE
    if resource.is_dir():
        return _on_disk(resource)
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "models").is_dir():
        return checkout / "models"
    return Path(__file__).resolve().parents[1] / SHIPPED_RESOURCE  # none shipped


SHIPPED_DIR = _shipped_dir()


class ModelStoreError(LookupError):
    """A model that cannot be found, registered or activated."""


@dataclass(frozen=True)
class StoredModel:
    """A model folder and its card; `where` is 'registry', 'shipped' or 'path'."""

    card: ModelCard
    folder: Path
    where: str

    @property
    def ref(self) -> str:
        return self.card.ref


def models_root(settings: Settings) -> Path:
    return settings.resolved_data_dir / "models"


def parse_ref(ref: str) -> tuple[str, str | None]:
    """`NAME` or `NAME:VERSION` -> (name, version or None)."""
    name, _, version = ref.strip().partition(":")
    for part in (name, version) if version else (name,):
        if not _PART.match(part):
            raise ModelStoreError(
                f"bad model reference {ref!r}: expected NAME or NAME:VERSION "
                "(letters, digits, '.', '_', '-')"
            )
    return name, version or None


def _load(folder: Path, where: str) -> StoredModel | None:
    try:
        return StoredModel(ModelCard.load(folder), folder, where)
    except CardError as exc:
        log.warning("skipping model folder %s: %s", folder, exc)
        return None


def _scan(root: Path, where: str) -> list[StoredModel]:
    if not root.is_dir():
        return []
    found = (_load(card.parent, where) for card in sorted(root.glob(f"*/*/{CARD_FILE}")))
    return [model for model in found if model is not None]


def registered(settings: Settings) -> list[StoredModel]:
    return _scan(models_root(settings), "registry")


def shipped(shipped_dir: Path | None = None) -> list[StoredModel]:
    return _scan(shipped_dir or SHIPPED_DIR, "shipped")


def all_models(settings: Settings, shipped_dir: Path | None = None) -> list[StoredModel]:
    return registered(settings) + shipped(shipped_dir)


def _newest(models: list[StoredModel]) -> StoredModel:
    return max(models, key=lambda m: (m.card.created_at, m.card.version))


def find(settings: Settings, ref: str, shipped_dir: Path | None = None) -> StoredModel:
    """A model by NAME[:VERSION] (registry first, then shipped) or by its folder's path."""
    path = Path(ref).expanduser()
    if (path / CARD_FILE).is_file():
        return StoredModel(ModelCard.load(path), path.resolve(), "path")
    name, version = parse_ref(ref)
    for models in (registered(settings), shipped(shipped_dir)):
        matches = [m for m in models if m.card.name == name and version in (None, m.card.version)]
        if matches:
            return _newest(matches)
    raise ModelStoreError(f"no model {ref!r} (see `marco-svc models list`)")


def default_shipped(shipped_dir: Path | None = None) -> StoredModel | None:
    """The shipped default: the one `DEFAULT` names, else the only shipped model."""
    shipped_dir = shipped_dir or SHIPPED_DIR
    models = shipped(shipped_dir)
    marker = shipped_dir / DEFAULT_FILE
    if marker.is_file():
        name, version = parse_ref(marker.read_text(encoding="utf-8"))
        matches = [m for m in models if m.card.name == name and version in (None, m.card.version)]
        if not matches:
            raise ModelStoreError(f"{marker} names a model that is not shipped")
        return _newest(matches)
    if len(models) > 1:
        raise ModelStoreError(f"{len(models)} models ship in {shipped_dir} and no {marker} file")
    return models[0] if models else None


def register(
    settings: Settings,
    source: Path,
    *,
    name: str | None = None,
    version: str | None = None,
    db: Database | None = None,
) -> StoredModel:
    """Copy a model folder (card.json + artifacts) into the registry and fill its checksums.

    Registering the same name:version again with the same artifacts changes nothing; with
    different artifacts it is refused. With `db`, the ModelVersion row is upserted too.
    """
    card = ModelCard.load(source)
    card.name, card.version = name or card.name, version or card.version
    parse_ref(f"{card.name}:{card.version}")
    if not card.artifacts:
        raise ModelStoreError(f"model card in {source} lists no artifacts")
    root = models_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".register-", dir=root))
    try:
        for fmt, artifact in list(card.artifacts.items()):
            src = source / artifact.file
            if not src.exists():
                raise ModelStoreError(f"model card in {source} lists {artifact.file}, not there")
            copy = shutil.copytree if src.is_dir() else shutil.copy2
            (staging / artifact.file).parent.mkdir(parents=True, exist_ok=True)
            copy(src, staging / artifact.file)
            card.add_artifact(fmt, staging, artifact.file)
        card.save(staging)
        dest = root / card.name / card.version
        if dest.exists():
            existing = ModelCard.load(dest)
            if {f: a.sha256 for f, a in existing.artifacts.items()} != {
                f: a.sha256 for f, a in card.artifacts.items()
            }:
                raise ModelStoreError(
                    f"model {card.ref} is already registered with other artifacts; "
                    "give it another version"
                )
            card = existing
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    stored = StoredModel(card, dest, "registry")
    if db is not None:
        from marco_svc.registry.versions import upsert_version

        upsert_version(db, stored)
    return stored
