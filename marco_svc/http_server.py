"""What waitress, the HTTP server of `marco-svc serve`, is told: its limits, from the settings.

- waitress reads a whole request, body included, before the app sees it: up to 512 KiB in
  memory, the rest in a temporary file (TMPDIR), up to `max_request_body_size`. Beyond that
  it answers 413 itself, in plain text, so that limit sits a little above
  `upload_max_bytes` (1 MiB + 64 KiB per image of `upload_max_images`, room for the
  multipart framing): the app's own 413, a problem document, is the one clients see.
- `connection_limit` (`http_connection_limit`): past it waitress stops accepting and new
  connections wait unanswered in the OS backlog (`http_backlog`) until one closes.
- `channel_timeout` (`http_channel_timeout`): an idle connection, or one whose request has
  stalled half-sent, is closed after this many seconds; waitress looks every
  `cleanup_interval` seconds, so it may live up to a third longer.
- poll() instead of select(): select() fails on descriptors numbered 1024 or more, which
  a thousand connections reach.

For exposure beyond the lab network put a reverse proxy (nginx) in front: it buffers
slow clients and can cap bodies and connections per client.
"""

from __future__ import annotations

from typing import Any

from marco_svc.config import Settings

IDENT = "marco-svc"
BODY_MARGIN_BYTES = 1024**2
BODY_MARGIN_PER_IMAGE_BYTES = 64 * 1024


def max_request_body_size(settings: Settings) -> int:
    """The largest request body waitress reads: `upload_max_bytes` plus the multipart margin."""
    return (
        settings.upload_max_bytes
        + BODY_MARGIN_BYTES
        + BODY_MARGIN_PER_IMAGE_BYTES * settings.upload_max_images
    )


def waitress_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `waitress.serve` / `waitress.create_server`, host and port aside."""
    timeout = max(1, settings.http_channel_timeout)
    return {
        "threads": settings.threads,
        "connection_limit": settings.http_connection_limit,
        "channel_timeout": timeout,
        "cleanup_interval": max(1, min(30, timeout // 3)),
        "backlog": settings.http_backlog,
        "max_request_body_size": max_request_body_size(settings),
        "asyncore_use_poll": True,
        "ident": IDENT,
    }


def raise_open_files_limit(connection_limit: int) -> int | None:
    """Raise this process's soft limit on open files (as far as the hard limit allows) so that
    `connection_limit` connections fit beside the database and model files; the soft limit
    now in force, or None where the platform has no such limit.

    A waitress channel holds a socket and, for a large request or answer, up to two
    temporary files; out of descriptors, waitress logs a failed accept() over and over.
    """
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * connection_limit + 256
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return soft
