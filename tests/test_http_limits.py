"""The HTTP server's limits follow the settings, and idle connections cannot lock clients out
(a live waitress server on a free port)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import waitress
from waitress import wasyncore

from marco_svc.api import create_app
from marco_svc.config import Settings, load_settings
from marco_svc.http_server import max_request_body_size, waitress_options
from marco_svc.runtime import open_runtime
from marco_svc.service import Service
from tests.helpers import wait_for

CLIENT_TIMEOUT = 10.0  # a server that does not answer within this is locked up


def test_options_follow_the_settings() -> None:
    settings = Settings(
        upload_max_bytes=2 * 1024**3,
        upload_max_images=10,
        threads=3,
        http_connection_limit=500,
        http_channel_timeout=45,
        http_backlog=256,
    )
    options = waitress_options(settings)
    assert options["max_request_body_size"] > 2 * 1024**3  # waitress refuses a body >= it
    assert options["max_request_body_size"] == max_request_body_size(settings)
    assert options["max_request_body_size"] <= 2 * 1024**3 + 2 * 1024**2
    assert (options["threads"], options["connection_limit"], options["backlog"]) == (3, 500, 256)
    assert options["channel_timeout"] == 45
    assert 1 <= options["cleanup_interval"] <= 45
    assert options["asyncore_use_poll"] is True  # select() cannot watch fds >= 1024
    assert options["ident"] == "marco-svc"
    waitress.adjustments.Adjustments(**options)  # every key is one waitress knows


def test_the_defaults_lift_waitress_own_limits() -> None:
    options = waitress_options(Settings())
    defaults = waitress.adjustments.Adjustments()
    assert options["connection_limit"] > defaults.connection_limit
    assert options["channel_timeout"] < defaults.channel_timeout
    assert options["max_request_body_size"] > Settings().upload_max_bytes
    assert options["max_request_body_size"] > defaults.max_request_body_size


@contextlib.contextmanager
def live_server(settings: Settings) -> Iterator[Any]:
    """marco-svc's app under waitress with the options `serve` gives it, on a free port."""
    runtime = open_runtime(settings)
    server = waitress.create_server(
        create_app(Service(runtime)), host="127.0.0.1", port=0, **waitress_options(settings)
    )
    loop = threading.Thread(target=server.run, name="waitress-loop", daemon=True)
    loop.start()
    try:
        yield server
    finally:
        # close every channel and the listener from inside the loop; then the loop ends
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        loop.join(CLIENT_TIMEOUT)
        server.task_dispatcher.shutdown()
        runtime.close()
        assert not loop.is_alive(), "the waitress loop did not stop"


def _ask(port: int, head: str, body: bytes = b"") -> bytes:
    """Send one request, read the whole answer (the server closes the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as client:
        client.sendall(head.encode() + body)
        answer = b""
        while chunk := client.recv(65536):  # a locked-out client times out here
            answer += chunk
    return answer


def _get(port: int, path: str) -> bytes:
    return _ask(port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")


def test_idle_connections_do_not_lock_other_clients_out(tmp_path: Path) -> None:
    settings = load_settings(env={}, data_dir=tmp_path / "data")
    with live_server(settings) as server:
        port = server.effective_port
        assert _get(port, "/healthz").startswith(b"HTTP/1.1 200")
        idle: list[socket.socket] = []
        try:
            for _ in range(150):  # more than waitress's default connection_limit (100)
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT))
            wait_for(
                lambda: len(server.active_channels) >= 150,
                CLIENT_TIMEOUT,
                "waitress to accept the 150 idle connections",
            )
            answer = _get(port, "/healthz")
            assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
            assert b"Server: marco-svc" in answer
        finally:
            for connection in idle:
                connection.close()


def test_an_upload_over_the_setting_reaches_the_app_far_over_it_does_not(tmp_path: Path) -> None:
    """Just over upload_max_bytes the app answers (problem documents); at waitress's
    max_request_body_size waitress answers 413 itself, in plain text, before the body."""
    settings = load_settings(env={}, data_dir=tmp_path / "data", upload_max_bytes=1000)
    limit = waitress_options(settings)["max_request_body_size"]
    head = (
        "POST /api/v1/inspections HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {}\r\n\r\n"
    )
    with live_server(settings) as server:
        port = server.effective_port
        near = _ask(port, head.format(1001), b"x" * 1001)
        assert b"exceeds max_body" not in near
        assert b"application/problem+json" in near.split(b"\r\n\r\n")[0], near[:300]
        far = _ask(port, head.format(limit))  # no body sent: refused on the headers
        assert far.startswith(b"HTTP/1.1 413"), far[:300]
        assert b"exceeds max_body" in far and b"text/plain" in far
