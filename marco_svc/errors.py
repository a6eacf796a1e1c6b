"""How an exception is told in one line (a recorded failure reason, a log line, a CLI error)."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of the exception's message (TensorFlow's `.message` when it has one),
    or its type's name when the message is empty."""
    text = str(getattr(exc, "message", "") or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
