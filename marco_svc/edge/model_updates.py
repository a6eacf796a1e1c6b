"""The model the edge agent scores with: pinned by `--model`, or fetched from the service.

The contract (the service's side lives in `marco_svc.api.edge`):

    GET /api/v1/edge/model       -> {"ref", "name", "version", "format", "sha256", "size", "card"}
    GET /api/v1/edge/model/file  -> the bytes of that artifact

`card` is the model card (`ModelCard.to_dict()`), `format` the artifact served (a TFLite
one) and `sha256` / `size` that file's. A model whose sha256 or NAME:VERSION differs from
the one in use (a calibrated copy registered as a new version has the same file and
another card) is downloaded to a temporary folder, checked (the announced sha256 and size, and the
card's own sha256 for that format must all agree), written with its card (listing that
one artifact) to `<state>/models/<name>-<version>-<sha[:12]>/` by renaming the finished
folder, loaded, and only then made current: a batch uses the model it started with, the
next one the new model. A download that fails its checks is refused with a log line and
the current model stays. `<state>/models/current.json` names the fetched model in use,
so a restarted agent scores at once, before (or without) reaching the service.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marco_svc.edge import EDGE_FORMATS
from marco_svc.edge.client import Server, Unreachable
from marco_svc.errors import first_line
from marco_svc.file_store import atomic_write
from marco_svc.nets.card import CARD_FILE, CardError, ModelCard
from marco_svc.nets.runner import Runner, open_runner

log = logging.getLogger(__name__)

MODEL_PATH = "/api/v1/edge/model"
MODEL_FILE_PATH = "/api/v1/edge/model/file"
MODELS_FOLDER = "models"
POINTER_FILE = "current.json"
MAX_MODEL_BYTES = 4 * 1024**3
KEEP_MODELS = 3  # fetched model folders kept (the one in use and the ones before it)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ModelError(RuntimeError):
    """No model can be used (the message says why)."""


@dataclass(frozen=True)
class EdgeModel:
    """A loaded model: its card, folder, the artifact format that runs, and the runner."""

    card: ModelCard
    folder: Path
    fmt: str
    runner: Runner
    source: str  # "pinned" (--model), "fetched" (from the service)

    @property
    def sha256(self) -> str:
        """The checksum of the artifact that scores (what results name as the model)."""
        return self.card.artifacts[self.fmt].sha256

    def identity(self) -> dict[str, str]:
        """The `model` object of each result: {name, version, sha256}."""
        return {"name": self.card.name, "version": self.card.version, "sha256": self.sha256}

    def summary(self) -> dict[str, Any]:
        return {
            "ref": self.card.ref,
            **self.identity(),
            "format": self.fmt,
            "folder": str(self.folder),
            "source": self.source,
        }


def edge_format(card: ModelCard) -> str:
    """The artifact the agent runs: the first of EDGE_FORMATS the card lists."""
    for fmt in EDGE_FORMATS:
        if fmt in card.artifacts:
            return fmt
    have = ", ".join(card.artifacts) or "none"
    raise CardError(f"{card.ref} has no TFLite artifact the edge agent can run (it has: {have})")


def open_model(folder: Path, source: str, fmt: str | None = None) -> EdgeModel:
    """Load the model in `folder` (a card.json and its files), checksums verified."""
    card = ModelCard.load(folder)
    fmt = fmt or edge_format(card)
    return EdgeModel(card, folder, fmt, open_runner(card, folder, fmt, verify=True), source)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:64] or "model"


class ModelManager:
    """Holds the model in use and keeps it current with the service (unless pinned).

    `pinned`: a model folder given with `--model`; updates are then off unless
    `updates=True`. `on_switch` is called with each model that becomes current.
    """

    def __init__(
        self,
        state_dir: Path,
        server: Server | None,
        pinned: Path | None = None,
        updates: bool | None = None,
        check_interval: float = 300.0,
        retry_interval: float = 30.0,
        on_switch: Callable[[EdgeModel], None] | None = None,
    ) -> None:
        self.folder = Path(state_dir) / MODELS_FOLDER
        self.server = server
        self.pinned = Path(pinned) if pinned is not None else None
        self.updates = (self.pinned is None if updates is None else updates) and server is not None
        self.check_interval, self.retry_interval = check_interval, retry_interval
        self.on_switch = on_switch
        self.problem: str | None = None  # why there is no model (or why the last check failed)
        self._current: EdgeModel | None = None
        self._told: str | None = None
        self._lock = threading.Lock()  # one check or switch at a time

    @property
    def current(self) -> EdgeModel | None:
        """The model to use for the next batch (one reference read: a switch is atomic)."""
        return self._current

    def _switch(self, model: EdgeModel) -> None:
        previous, self._current = self._current, model
        self.problem = None
        log.info(
            "scoring with %s (%s, sha256 %s, %s)%s",
            model.card.ref,
            model.fmt,
            model.sha256[:12],
            model.source,
            f"; was {previous.card.ref}" if previous is not None else "",
        )
        if self.on_switch is not None:
            self.on_switch(model)

    # -- start --------------------------------------------------------------------------------

    def load_start_model(self) -> EdgeModel | None:
        """The pinned model (its errors raise ModelError), else the last fetched one (its
        errors are logged); None when there is none yet."""
        if self.pinned is not None:
            try:
                model = open_model(self.pinned, "pinned")
            except (CardError, OSError, ValueError) as exc:
                raise ModelError(
                    f"cannot use the model in {self.pinned}: {first_line(exc)}"
                ) from None
            self._switch(model)
            return model
        self._clean_temporary()
        pointer = self.folder / POINTER_FILE
        if not pointer.is_file():
            self.problem = "no model fetched from the server yet"
            return None
        try:
            named = json.loads(pointer.read_text(encoding="utf-8"))
            name = str(named["folder"])
            if Path(name).name != name or name.startswith("."):
                raise ValueError(f"{pointer} names {name!r}, not a model folder")
            model = open_model(self.folder / name, "fetched", named["format"])
        except Exception as exc:
            self.problem = f"the last fetched model cannot be used: {first_line(exc)}"
            log.warning("%s; asking the server for one", self.problem)
            return None
        self._switch(model)
        return model

    # -- updates ------------------------------------------------------------------------------

    def check_once(self) -> str:
        """Ask the service which model to use and switch to it when it is new. Returns
        "unchanged", "switched", "refused" (a bad offer or download), "none" (the server
        has no model for edge agents), "unreachable" or "disabled"."""
        if not self.updates or self.server is None:
            return "disabled"
        with self._lock:
            try:
                outcome, problem = self._check()
            except Exception as exc:  # never let the update loop die
                log.exception("model update check failed")
                outcome, problem = "refused", f"model update check failed: {first_line(exc)}"
        if problem is None:
            self._told = None
        else:
            self.problem = problem if self._current is None else self.problem
            if problem != self._told:
                keeping = (
                    f"; keeping {self._current.card.ref}" if self._current else "; no model yet"
                )
                level = logging.ERROR if outcome == "refused" else logging.WARNING
                log.log(level, "%s%s", problem, keeping)
                self._told = problem
        return outcome

    def _check(self) -> tuple[str, str | None]:
        assert self.server is not None
        try:
            reply = self.server.request("GET", MODEL_PATH)
        except Unreachable as exc:
            return "unreachable", f"cannot ask the server for a model: {exc}"
        if reply.status == 404:
            return "none", f"the server offers no model for edge agents ({reply.detail()})"
        if reply.status in (401, 403):
            return (
                "unreachable",
                f"the server refused the token: HTTP {reply.status}: {reply.detail()}",
            )
        if reply.status != 200:
            return "unreachable", f"asking for a model: HTTP {reply.status}: {reply.detail()}"
        try:
            offer = _Offer.parse(reply.json())
        except (ValueError, KeyError, TypeError, CardError) as exc:
            return "refused", f"refused the server's model offer: {first_line(exc)}"
        current = self._current
        if current is not None and (current.sha256, current.card.ref) == (
            offer.sha256,
            offer.card.ref,
        ):
            return "unchanged", None
        target = self.folder / offer.folder_name
        if not target.is_dir():
            problem = self._download(offer, target)
            if problem is not None:
                return "refused", f"refused the model {offer.ref} from the server: {problem}"
        try:
            model = open_model(target, "fetched", offer.fmt)
        except Exception as exc:
            shutil.rmtree(target, ignore_errors=True)
            return "refused", f"refused the model {offer.ref}: it does not load: {first_line(exc)}"
        atomic_write(
            self.folder / POINTER_FILE,
            json.dumps(
                {"folder": target.name, "format": offer.fmt, "sha256": offer.sha256}
            ).encode(),
        )
        self._switch(model)
        self._prune(keep=target)
        return "switched", None

    def _download(self, offer: _Offer, target: Path) -> str | None:
        """Fetch and check the artifact, then rename the finished folder to `target`;
        the problem (nothing written) or None."""
        assert self.server is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=".download-", dir=self.folder))
        try:
            digest = hashlib.sha256()
            size = 0
            with (temporary / offer.file).open("wb") as out:

                def sink(block: bytes) -> None:
                    nonlocal size
                    digest.update(block)
                    size += len(block)
                    out.write(block)

                try:
                    reply = self.server.download(MODEL_FILE_PATH, sink, limit=offer.limit)
                except Unreachable as exc:
                    return f"the download broke off: {exc}"
                if reply.status != 200:
                    return f"the download answered HTTP {reply.status}: {reply.detail()}"
            got = digest.hexdigest()
            if got != offer.sha256:
                return (
                    f"the downloaded file's sha256 is {got[:12]}..., the server announced "
                    f"{offer.sha256[:12]}... (a corrupt or changed download)"
                )
            if offer.size is not None and size != offer.size:
                return f"the download has {size} bytes, the server announced {offer.size}"
            offer.card.artifacts = {offer.fmt: offer.card.artifacts[offer.fmt]}
            offer.card.artifacts[offer.fmt].bytes = size
            offer.card.save(temporary)  # the card of what is here: that one artifact
            temporary.rename(target)
            log.info("downloaded %s (%s, %d bytes) to %s", offer.ref, offer.fmt, size, target)
            return None
        finally:
            if temporary.exists():
                shutil.rmtree(temporary, ignore_errors=True)

    def _clean_temporary(self) -> None:
        if self.folder.is_dir():
            for leftover in self.folder.glob(".download-*"):
                shutil.rmtree(leftover, ignore_errors=True)

    def _prune(self, keep: Path) -> None:
        """Remove fetched model folders beyond the KEEP_MODELS most recent (never `keep`)."""
        folders = [
            p
            for p in self.folder.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / CARD_FILE).is_file()
        ]
        folders.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for old in folders[KEEP_MODELS:]:
            if old != keep:
                shutil.rmtree(old, ignore_errors=True)

    def run(self, stop: threading.Event) -> None:
        """Check for a new model every `check_interval` (every `retry_interval` while
        there is none) until `stop` is set."""
        while not stop.is_set():
            self.check_once()
            stop.wait(self.retry_interval if self._current is None else self.check_interval)


@dataclass
class _Offer:
    """The server's answer to GET /api/v1/edge/model, checked."""

    ref: str
    fmt: str
    sha256: str
    size: int | None
    card: ModelCard

    @property
    def file(self) -> str:
        return Path(self.card.artifacts[self.fmt].file).name

    @property
    def folder_name(self) -> str:
        return f"{_slug(self.card.name)}-{_slug(self.card.version)}-{self.sha256[:12]}"

    @property
    def limit(self) -> int:
        return min(self.size, MAX_MODEL_BYTES) if self.size is not None else MAX_MODEL_BYTES

    @classmethod
    def parse(cls, data: Any) -> _Offer:
        if not isinstance(data, dict):
            raise ValueError("the answer is not a JSON object")
        fmt, sha = data["format"], str(data["sha256"]).lower()
        if fmt not in EDGE_FORMATS:
            raise ValueError(f"its format {fmt!r} cannot run here (runnable: {EDGE_FORMATS})")
        if not _SHA256.match(sha):
            raise ValueError(f"{data['sha256']!r} is not a sha256")
        if not isinstance(data["card"], dict):
            raise ValueError("its card is not a JSON object")
        card = ModelCard.from_dict(data["card"])
        artifact = card.artifacts.get(fmt)
        if artifact is None:
            raise ValueError(f"its card lists no {fmt} artifact")
        if artifact.sha256.lower() != sha:
            raise ValueError(
                f"its card gives the {fmt} artifact sha256 {artifact.sha256[:12]}..., "
                f"the server announced {sha[:12]}..."
            )
        name = Path(artifact.file).name
        if name != artifact.file or name.startswith(".") or name == CARD_FILE:
            raise ValueError(f"its card names an unusable artifact file {artifact.file!r}")
        for field, expected in (("name", card.name), ("version", card.version)):
            if field in data and str(data[field]) != expected:
                raise ValueError(
                    f"its {field} {data[field]!r} differs from the card's {expected!r}"
                )
        size = data.get("size")
        if size is not None and (not isinstance(size, int) or size < 0):
            raise ValueError(f"its size {size!r} is not a number of bytes")
        return cls(str(data.get("ref") or card.ref), fmt, sha, size, card)
