"""Drains the outbox to the service: `POST {server}/api/v1/edge/results`, in batches.

The contract (the service's side lives in `marco_svc.api.edge`):

    POST /api/v1/edge/results   Authorization: Bearer <token>
    {"results": [item, ...]}    (items as the agent put them in the outbox, each with `key`)
    200 {"results": [{"key", "outcome": "stored" | "duplicate" | "failed", "image_id",
                      "reason"}]}

stored / duplicate -> the row is sent; failed -> the row is failed for good, with the
server's reason (logged). Everything else keeps the rows pending, to be tried again:
no answer, 5xx, 408 and 429 with exponential backoff and jitter (capped, `Retry-After`
honoured); 401 / 403 (the token), 404 / 405 (a service without the edge endpoint) with
one clear log line and a long backoff. A 413 halves the batch; another 4xx for a batch
is retried one result at a time, and a single result the server rejects that way is
failed with the reason. A result the server stored whose answer was lost is sent again
and answered `duplicate`: the key makes the retry harmless. Nothing here raises.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from marco_svc.edge.client import Reply, Server, Unreachable
from marco_svc.edge.outbox import Outbox, OutboxItem, now_iso
from marco_svc.errors import first_line

log = logging.getLogger(__name__)

RESULTS_PATH = "/api/v1/edge/results"
SETTLED = ("stored", "duplicate")
TRANSIENT_STATUS = frozenset({408, 425, 429})
REFUSED_STATUS = frozenset({401, 403})
NO_ENDPOINT_STATUS = frozenset({404, 405})


@dataclass
class ForwardReport:
    """What one try did. `error` is why rows stayed pending (None: the server answered
    for every row); `kind` is "unreachable", "transient", "refused" or "no-endpoint"."""

    tried: int = 0
    stored: int = 0
    duplicate: int = 0
    failed: int = 0
    kept: int = 0
    error: str | None = None
    kind: str | None = None
    status: int | None = None
    retry_after: float | None = None

    @property
    def sent(self) -> int:
        return self.stored + self.duplicate

    def add(self, other: ForwardReport) -> None:
        for name in ("tried", "stored", "duplicate", "failed", "kept"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.error is not None:
            self.error, self.kind, self.status = other.error, other.kind, other.status
            self.retry_after = other.retry_after


class Forwarder:
    """Sends pending outbox rows to `server`; `run` loops until its stop event is set."""

    def __init__(
        self,
        outbox: Outbox,
        server: Server,
        batch_size: int = 50,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        refused_backoff: float = 600.0,
        idle_poll: float = 30.0,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.outbox, self.server = outbox, server
        self.batch_size = max(1, batch_size)
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.refused_backoff, self.idle_poll = refused_backoff, idle_poll
        self.jitter = jitter
        self.failures = 0  # tries in a row that left rows pending
        self.last: ForwardReport | None = None
        self._batch = self.batch_size
        self._told: str | None = None  # the trouble already logged (one line per streak)
        self._wake = threading.Event()

    # -- one try ----------------------------------------------------------------------------

    def forward_once(self) -> ForwardReport:
        """Send one batch of pending rows and settle what the server answered."""
        try:
            items = self.outbox.peek(self._batch)
            report = self._send(items) if items else ForwardReport()
        except Exception as exc:  # e.g. the outbox file: never let the loop die
            log.exception("forwarding failed")
            report = ForwardReport(error=first_line(exc), kind="transient")
        self._after(report)
        return report

    def drain(self, deadline: float | None = None) -> ForwardReport:
        """Send batches until nothing is pending, a try fails, or `deadline` (monotonic)."""
        total = ForwardReport()
        while deadline is None or time.monotonic() < deadline:
            report = self.forward_once()
            total.add(report)
            if report.error is not None or report.tried == 0:
                break
        return total

    def _send(self, items: Sequence[OutboxItem]) -> ForwardReport:
        keys = [item.key for item in items]
        body = {"results": [item.payload for item in items]}
        try:
            reply = self.server.request("POST", RESULTS_PATH, body)
        except Unreachable as exc:
            return self._keep(keys, f"server unreachable: {exc}", "unreachable")
        status = reply.status
        if status == 200:
            return self._settle(items, reply)
        what = f"HTTP {status}: {reply.detail()}"
        if status in REFUSED_STATUS:
            return self._keep(keys, f"the server refused the token: {what}", "refused", status)
        if status in NO_ENDPOINT_STATUS:
            why = f"the server has no edge endpoint ({what}); is it older than this agent?"
            return self._keep(keys, why, "no-endpoint", status)
        if status >= 500 or status in TRANSIENT_STATUS:
            report = self._keep(keys, f"the server answered {what}", "transient", status)
            report.retry_after = reply.retry_after()
            return report
        if status == 413 and len(items) > 1:
            self._batch = max(1, len(items) // 2)
            log.info(
                "the server found %d results too large; sending %d at a time",
                *(len(items), self._batch),
            )
            return self._send(items[: self._batch])
        if len(items) > 1:  # one bad result must not hold back the others
            log.warning("the server rejected a batch (%s); sending one at a time", what)
            report = ForwardReport()
            for item in items:
                report.add(self._send([item]))
            return report
        self._fail(items[0], f"the server rejected it: {what}")
        return ForwardReport(tried=1, failed=1)

    def _settle(self, items: Sequence[OutboxItem], reply: Reply) -> ForwardReport:
        keys = [item.key for item in items]
        try:
            answers = {a["key"]: a for a in reply.json()["results"] if isinstance(a, dict)}
        except (ValueError, KeyError, TypeError):
            return self._keep(
                keys, f"unreadable answer from the server: {reply.detail()}", "transient", 200
            )
        report = ForwardReport(tried=len(items))
        sent: list[str] = []
        unanswered: list[str] = []
        for item in items:
            outcome = answers.get(item.key, {}).get("outcome")
            if outcome in SETTLED:
                sent.append(item.key)
                setattr(report, outcome, getattr(report, outcome) + 1)
            elif outcome == "failed":
                reason = answers[item.key].get("reason") or "no reason given"
                self._fail(item, f"the server refused it: {reason}")
                report.failed += 1
            else:
                unanswered.append(item.key)
        self.outbox.mark_sent(sent)
        if unanswered:
            self.outbox.note_attempt(unanswered, "the server's answer did not settle it")
            log.warning(
                "the server's answer left %d results unsettled; will retry", len(unanswered)
            )
            report.kept = len(unanswered)
            report.error, report.kind, report.status = "answer incomplete", "transient", 200
        if sent:
            log.info(
                "forwarded %d results (%d stored, %d duplicate)",
                len(sent),
                report.stored,
                report.duplicate,
            )
        return report

    def _keep(
        self, keys: list[str], error: str, kind: str, status: int | None = None
    ) -> ForwardReport:
        self.outbox.note_attempt(keys, error)
        return ForwardReport(tried=len(keys), kept=len(keys), error=error, kind=kind, status=status)

    def _fail(self, item: OutboxItem, reason: str) -> None:
        self.outbox.mark_failed(item.key, reason)
        where = item.payload.get("path") or item.key
        log.error("result for %s failed for good: %s", where, reason)

    def _after(self, report: ForwardReport) -> None:
        """Count the streak and log each kind of trouble once per streak."""
        self.last = report
        if report.error is None:
            if self.failures and self._told:
                log.info("the server takes results again")
                self._note(None)
            self.failures, self._told = 0, None
            if report.tried:
                self._batch = min(self.batch_size, max(self._batch, 1) * 2)
            return
        self.failures += 1
        if report.kind != self._told:
            level = logging.ERROR if report.kind in ("refused", "no-endpoint") else logging.WARNING
            log.log(
                level,
                "%s; results stay in the outbox, retrying in about %s",
                report.error,
                _seconds(self.retry_delay()),
            )
            self._told = report.kind
            self._note({"at": now_iso(), "error": report.error})
        else:
            log.debug("still failing: %s", report.error)

    def _note(self, problem: dict[str, str] | None) -> None:
        """Record the trouble for `marco-svc edge status` (best effort)."""
        try:
            self.outbox.set_meta("forward_problem", problem)
        except Exception as exc:
            log.debug("cannot note the forwarding problem: %s", first_line(exc))

    # -- the loop ---------------------------------------------------------------------------

    def retry_delay(self) -> float:
        """Seconds to wait after the last try: 0 when it went well, else `backoff_delay`."""
        report = self.last
        if report is None or report.error is None:
            return 0.0
        return backoff_delay(
            self.failures,
            report.kind,
            report.retry_after,
            (self.backoff_base, self.backoff_cap, self.refused_backoff),
            self.jitter,
        )

    def wake(self) -> None:
        """New results are in the outbox: stop an idle wait (never a backoff)."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Forward until `stop` is set (call `wake` after setting it, to end an idle wait)."""
        while not stop.is_set():
            self._wake.clear()
            report = self.forward_once()
            if report.error is not None:
                stop.wait(self.retry_delay())
            elif report.tried == 0:
                self._wake.wait(self.idle_poll)


def trouble_kind(status: int) -> str:
    """What an answer other than success means for a retry: "refused" (the token),
    "no-endpoint" (a server older than this agent), else "transient"."""
    if status in REFUSED_STATUS:
        return "refused"
    if status in NO_ENDPOINT_STATUS:
        return "no-endpoint"
    return "transient"


def backoff_delay(
    failures: int,
    kind: str | None,
    retry_after: float | None,
    limits: tuple[float, float, float],
    jitter: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after `failures` tries in a row went wrong (0 when none did):
    exponential from `base` up to `cap`, at least the server's Retry-After (up to `long`),
    `long` after a refused token or a missing endpoint; with jitter (50-100 %).
    `limits` is (base, cap, long)."""
    if failures <= 0:
        return 0.0
    base, cap, long = limits
    if kind in ("refused", "no-endpoint"):
        delay = long
    else:
        delay = min(cap, base * 2 ** min(failures - 1, 30))
        if retry_after is not None:
            delay = max(delay, min(retry_after, long))
    return delay * (0.5 + 0.5 * jitter())


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.0f} min"
