"""Sends the image files the server asks for: the files of images this agent scored stay on
the imager PC until someone on the server wants one (its page, thumbnail or file).

The contract (the service's side lives in `marco_svc.api.edge` and `marco_svc.edge_wanted`):

    GET /api/v1/edge/wanted?limit=N   -> {"images": [{"image_id", "path", "sha256",
                                                      "size_bytes"}]}
    PUT /api/v1/edge/images/ID/file         the file's bytes (application/octet-stream)
    PUT /api/v1/edge/images/ID/unavailable  {"reason": "..."}: the server stops asking

Each asked file must lie in a watched folder and still have the sha256 the agent scored
(it is read under the agent's file policy: no links out of the folders, the size limit).
A file that is gone, changed, or one the server refuses for good (413, 422) is answered
"unavailable" with the reason, never retried; one that cannot be read just now is left
for a later poll. At most `batch` files per poll; a full batch that went well polls again
at once, else every `interval` seconds. Server trouble stops the pass and backs off as the
forwarder does (`forwarder.backoff_delay`). Nothing here raises.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from marco_svc.edge.client import Reply, Server, Unreachable
from marco_svc.edge.forwarder import backoff_delay, trouble_kind
from marco_svc.errors import first_line
from marco_svc.file_access import FilePolicy, is_within, read_image_file

log = logging.getLogger(__name__)

WANTED_PATH = "/api/v1/edge/wanted"
FILE_PATH = "/api/v1/edge/images/{}/file"
UNAVAILABLE_PATH = "/api/v1/edge/images/{}/unavailable"
BATCH = 10
INTERVAL = 30.0
GONE = "the file is no longer on the imager PC (deleted or moved)"
CHANGED = "the file on the imager PC has changed since it was scored"
NOT_WATCHED = "the file is not in a folder the edge agent watches"
REFUSED_FOR_GOOD = frozenset({413, 422})


@dataclass(frozen=True)
class Wanted:
    """One file the server asks for."""

    image_id: int
    path: str
    sha256: str


@dataclass
class PullReport:
    """What one poll did; `error` and `kind` (as the forwarder's) when the server failed."""

    asked: int = 0
    sent: int = 0
    unavailable: int = 0
    later: int = 0
    error: str | None = None
    kind: str | None = None
    retry_after: float | None = None

    def stopped_by(self, trouble: PullReport) -> PullReport:
        """This report, with the server trouble that ended the pass."""
        self.error, self.kind, self.retry_after = trouble.error, trouble.kind, trouble.retry_after
        return self


class FilePuller:
    """Answers the server's requests for image files under `roots` (see the module docs)."""

    def __init__(
        self,
        server: Server,
        roots: Sequence[str],
        policy: FilePolicy,
        batch: int = BATCH,
        interval: float = INTERVAL,
        backoff: tuple[float, float, float] = (1.0, 60.0, 600.0),
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.server, self.policy = server, policy
        self.roots = [Path(root) for root in roots]
        self.batch, self.interval = max(1, batch), interval
        self.backoff, self.jitter = backoff, jitter
        self.failures = 0
        self._told: str | None = None

    # -- one poll ---------------------------------------------------------------------------

    def pull_once(self) -> PullReport:
        """Ask the server what it wants and answer each (at most `batch`)."""
        try:
            report = self._pull()
        except Exception as exc:  # never let the loop die
            log.exception("sending asked files failed")
            report = PullReport(error=first_line(exc), kind="transient")
        self._after(report)
        return report

    def _pull(self) -> PullReport:
        reply = self._call("GET", f"{WANTED_PATH}?limit={self.batch}")
        if isinstance(reply, PullReport):
            return reply
        if reply.status != 200:
            return self._trouble(reply)
        try:
            items = [
                Wanted(int(item["image_id"]), str(item["path"]), str(item["sha256"]).lower())
                for item in reply.json()["images"]
            ]
        except (ValueError, KeyError, TypeError):
            return PullReport(error=f"unreadable answer: {reply.detail()}", kind="transient")
        report = PullReport(asked=len(items))
        for item in items:
            trouble = self._answer(item, report)
            if trouble is not None:
                return report.stopped_by(trouble)
        return report

    def _call(
        self, method: str, path: str, body: object = None, raw: bytes | None = None
    ) -> Reply | PullReport:
        """The server's answer, or a PullReport when none came."""
        try:
            return self.server.request(method, path, body, raw)
        except Unreachable as exc:
            return PullReport(error=f"server unreachable: {exc}", kind="unreachable")

    @staticmethod
    def _trouble(reply: Reply) -> PullReport:
        kind = trouble_kind(reply.status)
        what = f"HTTP {reply.status}: {reply.detail()}"
        if kind == "no-endpoint":
            what = f"the server does not ask for files ({what}); is it older than this agent?"
        return PullReport(error=what, kind=kind, retry_after=reply.retry_after())

    def _answer(self, item: Wanted, report: PullReport) -> PullReport | None:
        """Send one file or say why not; a PullReport when the server failed (stop)."""
        found = self._read(item)
        if found is None:
            report.later += 1
            return None
        if isinstance(found, str):
            return self._unavailable(item, found, report)
        reply = self._call("PUT", FILE_PATH.format(item.image_id), raw=found)
        if isinstance(reply, PullReport):
            return reply
        if reply.status == 200:
            report.sent += 1
            log.info("sent %s (image %d), which the server asked for", item.path, item.image_id)
            return None
        if reply.status in REFUSED_FOR_GOOD:
            why = f"the server refused the file: HTTP {reply.status}: {reply.detail()}"
            return self._unavailable(item, why, report)
        if reply.status in (404, 409):  # gone from the server, or not its bytes: log, go on
            log.error("the server did not take %s: %s", item.path, reply.detail())
            return None
        return self._trouble(reply)

    def _unavailable(self, item: Wanted, reason: str, report: PullReport) -> PullReport | None:
        reply = self._call("PUT", UNAVAILABLE_PATH.format(item.image_id), body={"reason": reason})
        if isinstance(reply, PullReport):
            return reply
        if reply.status not in (200, 404):
            return self._trouble(reply)
        report.unavailable += 1
        log.warning("cannot send %s (image %d): %s", item.path, item.image_id, reason)
        return None

    def _read(self, item: Wanted) -> bytes | str | None:
        """The file's bytes; or why it can never be sent; or None (try again later)."""
        path = Path(os.path.abspath(item.path))
        if not is_within(path, self.roots):
            return NOT_WATCHED
        if not os.path.lexists(path):
            return GONE
        facts = read_image_file(path, self.policy)
        if facts.refused:
            if not (facts.problem or "").startswith("unreadable file"):
                return f"the file cannot be sent: {facts.problem}"
            if not os.path.lexists(path):
                return GONE
            log.info("cannot read %s now, will try again: %s", item.path, facts.problem)
            return None
        if facts.sha256 != item.sha256:
            return CHANGED
        try:
            data = facts.path.read_bytes()
        except OSError as exc:
            log.info("cannot read %s now, will try again: %s", item.path, exc.strerror or exc)
            return None
        return data if hashlib.sha256(data).hexdigest() == item.sha256 else None

    # -- the loop ---------------------------------------------------------------------------

    def _after(self, report: PullReport) -> None:
        """Count the streak and log each kind of trouble once per streak."""
        if report.error is None:
            if self._told:
                log.info("the server answers about asked files again")
            self.failures, self._told = 0, None
            return
        self.failures += 1
        if report.kind != self._told:
            level = logging.INFO if report.kind == "no-endpoint" else logging.WARNING
            log.log(level, "asked files wait: %s", report.error)
            self._told = report.kind

    def next_wait(self, report: PullReport) -> float:
        """Seconds until the next poll: the backoff after trouble, a moment after a full
        batch that went well (more may wait), else `interval`."""
        if report.error is not None:
            return backoff_delay(
                self.failures, report.kind, report.retry_after, self.backoff, self.jitter
            )
        if report.asked >= self.batch and report.sent + report.unavailable > 0:
            return 1.0
        return self.interval

    def run(self, stop: threading.Event) -> None:
        """Poll until `stop` is set."""
        while not stop.is_set():
            stop.wait(self.next_wait(self.pull_once()))
