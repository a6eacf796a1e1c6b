"""HTTP calls from the edge agent to the service: urllib, a Bearer token, no new dependency.

`Server.request` answers every HTTP status as a `Reply` (a 500 is an answer, not an
exception) and raises `Unreachable` only when no answer came (refused connection, DNS,
timeout, a connection closed mid-answer): the callers decide what to retry.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.client import HTTPException
from typing import IO, Any
from urllib.parse import urlsplit

from marco_svc import __version__

USER_AGENT = f"marco-svc-edge/{__version__}"
MAX_ANSWER_BYTES = 16 * 1024**2  # a JSON answer larger than this is not the service's


class Unreachable(OSError):
    """No HTTP answer came (connection refused or lost, DNS, timeout)."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body as JSON (ValueError when it is not)."""
        return json.loads(self.body.decode("utf-8"))

    def detail(self, limit: int = 200) -> str:
        """What the server said, for a log line: its JSON `message` / `detail` if any."""
        try:
            data = self.json()
        except ValueError:
            text = self.body.decode("utf-8", "replace").strip()
            return " ".join(text.split())[:limit] or f"HTTP {self.status}"
        if isinstance(data, dict):
            for name in ("message", "detail", "error", "title"):
                if isinstance(data.get(name), str) and data[name]:
                    return data[name][:limit]
        return json.dumps(data)[:limit]

    def retry_after(self) -> float | None:
        """Seconds from a `Retry-After: N` header, if the server sent one."""
        value = self.headers.get("Retry-After", "")
        try:
            return max(0.0, float(value))
        except ValueError:
            return None


def check_server_url(url: str) -> str:
    """The base URL without a trailing slash; ValueError unless it is http(s)://HOST[...]."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"server URL {url!r} is not like https://marco.example.org")
    if parts.query or parts.fragment:
        raise ValueError(f"server URL {url!r} may not have a query or fragment")
    return url.strip().rstrip("/")


def is_plain_http_to_remote(url: str) -> bool:
    """True for http:// to another host: the token would travel unencrypted."""
    parts = urlsplit(url)
    return parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1")


class Server:
    """The service at `base_url` (e.g. https://marco.example.org), called with `token`."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        self.base_url = check_server_url(base_url)
        self.token = token
        self.timeout = timeout

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _open(
        self,
        method: str,
        path: str,
        body: Any = None,
        accept: str = "application/json",
        raw: bytes | None = None,
    ) -> tuple[int, Message, IO[bytes]]:
        data = raw
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Accept": accept,
            "User-Agent": USER_AGENT,
        }
        if raw is not None:
            headers["Content-Type"] = "application/octet-stream"
        elif body is not None:
            data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url(path), data, headers, method=method)
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:  # an answer with an error status
            return exc.code, exc.headers, exc
        except (urllib.error.URLError, OSError, HTTPException) as exc:
            raise Unreachable(_why(exc)) from None
        return response.status, response.headers, response

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Reply:
        """One call with a JSON `body` or `raw` bytes (application/octet-stream); the whole
        answer (at most MAX_ANSWER_BYTES) as a Reply."""
        status, headers, stream = self._open(method, path, body, raw=raw)
        try:
            with stream:
                data = stream.read(MAX_ANSWER_BYTES + 1)
        except (OSError, HTTPException) as exc:  # the answer broke off
            raise Unreachable(_why(exc)) from None
        if len(data) > MAX_ANSWER_BYTES:
            raise Unreachable(f"the answer to {method} {path} is larger than {MAX_ANSWER_BYTES}")
        return Reply(status, data, dict(headers.items()))

    def download(
        self, path: str, sink: Callable[[bytes], None], limit: int, chunk: int = 1 << 20
    ) -> Reply:
        """GET `path`, passing the body to `sink` in chunks (at most `limit` bytes, else
        Unreachable); the Reply has the status and headers, and the body only on an error."""
        status, headers, stream = self._open("GET", path, accept="*/*")
        try:
            with stream:
                if status != 200:
                    return Reply(status, stream.read(MAX_ANSWER_BYTES), dict(headers.items()))
                received = 0
                while block := stream.read(chunk):
                    received += len(block)
                    if received > limit:
                        raise Unreachable(f"the download of {path} is larger than {limit} bytes")
                    sink(block)
        except (OSError, HTTPException) as exc:
            if isinstance(exc, Unreachable):
                raise
            raise Unreachable(_why(exc)) from None
        return Reply(status, b"", dict(headers.items()))


def _why(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(reason, TimeoutError) or isinstance(exc, TimeoutError):
        return "timed out"
    text = str(reason if reason is not None else exc) or type(exc).__name__
    return " ".join(text.split())
