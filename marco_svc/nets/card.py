"""The model card: one dataclass that scoring, export, the API and the web page all read.

A model lives in a folder holding `card.json` and its artifact files. The card says
which network it is, its heads (scheme -> labels in output order), its input size and
preprocessing (by name, see `marco_svc.nets.preprocessing`), where it came from, how
it scored, and its operating points for threshold crystal rules.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from marco_svc.labels import MARCO4, MERCK10, labels_of
from marco_svc.nets.calibration import check_calibration

CARD_FILE = "card.json"
# "litert-preprocess" is no network: the LiteRT graph of the preprocessing (lite_preprocessing).
ARTIFACT_FORMATS = (
    "keras",
    "tflite-fp32",
    "tflite-fp16",
    "tflite-int8",
    "savedmodel",
    "litert-preprocess",
)


class CardError(ValueError):
    """A model card that is missing, unreadable or inconsistent."""


def sha256_of(path: Path) -> str:
    """Checksum of a file, or of every file under a folder (by relative path, sorted)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass
class Artifact:
    """One file (or folder) of a model in one format, with its checksum."""

    file: str
    sha256: str
    bytes: int = 0


@dataclass
class ModelCard:
    name: str
    version: str
    architecture: str
    heads: dict[str, list[str]]
    input_size: tuple[int, int]
    channels: int = 3
    preprocessing: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    operating_points: dict[str, Any] = field(default_factory=dict)
    exports: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)  # head -> temperature, ...
    notes: str = ""
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if not self.heads:
            raise CardError(f"model card {self.name}: no heads")
        for scheme, labels in self.heads.items():
            if list(labels) != list(labels_of(scheme)):
                raise CardError(
                    f"model card {self.name}: head {scheme} labels {labels} differ from the "
                    f"scheme's {list(labels_of(scheme))}"
                )
        self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        self.check_calibration()

    def check_calibration(self) -> None:
        """CardError unless `calibration` names heads of the card with valid entries."""
        try:
            check_calibration(self.calibration, self.heads)
        except ValueError as exc:
            raise CardError(f"model card {self.name}: {exc}") from None

    @property
    def scheme(self) -> str:
        """'marco4', 'merck10', or 'both' for a two-head model."""
        return "both" if len(self.heads) > 1 else next(iter(self.heads))

    @property
    def labels(self) -> list[str]:
        """Every label the model outputs, four-way head first."""
        return [label for scheme in (MARCO4, MERCK10) for label in self.heads.get(scheme, [])]

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def add_artifact(self, fmt: str, folder: Path, file: str) -> Artifact:
        """Record a file already placed in the model folder, with its checksum and size."""
        if fmt not in ARTIFACT_FORMATS:
            raise CardError(f"unknown artifact format {fmt!r} (known: {ARTIFACT_FORMATS})")
        path = folder / file
        size = (
            sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            if path.is_dir()
            else path.stat().st_size
        )
        artifact = Artifact(file, sha256_of(path), size)
        self.artifacts[fmt] = artifact
        return artifact

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["input_size"] = list(self.input_size)
        data["scheme"] = self.scheme
        if not self.calibration:  # a card without one is written as before it existed
            del data["calibration"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["artifacts"] = {
            fmt: Artifact(**artifact) for fmt, artifact in data.get("artifacts", {}).items()
        }
        try:
            return cls(**values)
        except TypeError as exc:
            raise CardError(f"model card is missing fields: {exc}") from None

    def save(self, folder: Path) -> Path:
        self.check_calibration()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / CARD_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: Path) -> ModelCard:
        path = folder / CARD_FILE
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise CardError(f"no model card at {path}") from None
        except json.JSONDecodeError as exc:
            raise CardError(f"model card {path} is not JSON: {exc}") from None

    def verify(self, folder: Path, formats: Sequence[str] | None = None) -> None:
        """Raise CardError when an artifact (of `formats`, default all) is missing or its
        checksum differs."""
        for fmt in self.artifacts if formats is None else formats:
            artifact = self.artifacts[fmt]
            path = folder / artifact.file
            if not path.exists():
                raise CardError(f"{self.ref}: {fmt} artifact {path} is missing")
            if sha256_of(path) != artifact.sha256:
                raise CardError(f"{self.ref}: {fmt} artifact {path} fails its sha256 check")
