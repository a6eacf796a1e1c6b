"""The edge agent's outbox: every result, stored locally before any network call.

One SQLite file (the stdlib `sqlite3`, WAL, `synchronous=FULL`: a put that returned is
on disk) with one row per result. `key` is unique: the same image scored by the same
model for the same drop slot is one row, however often it is offered. A row is
`pending` until the server answers stored or duplicate (`sent`), or it is `failed` for
good (the server refused that result, or the image could not be scored here; never
sent as a score). Rows are never deleted: the outbox also tells a restarted agent which
files it has already handled (by path, size and mtime).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

STATES = ("pending", "sent", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at TEXT NOT NULL,
    sent_at TEXT,
    path TEXT,
    size_bytes INTEGER,
    mtime_ns INTEGER
);
CREATE INDEX IF NOT EXISTS results_by_state ON results (state, id);
CREATE INDEX IF NOT EXISTS results_by_path ON results (path);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class OutboxItem:
    """One pending result: its key, the JSON item sent to the server, tries so far."""

    key: str
    payload: dict[str, Any]
    attempts: int


@dataclass(frozen=True)
class FileStamp:
    """The file a result came from, as it was when read (so a rescan can skip it)."""

    path: str
    size: int
    mtime_ns: int


class Outbox:
    """The outbox at `path` (created with its folder unless `create` is False; then a
    missing file raises FileNotFoundError). Safe to share between threads."""

    def __init__(self, path: Path, create: bool = True) -> None:
        self.path = Path(path)
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.is_file():
            raise FileNotFoundError(f"no outbox at {self.path}")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                changed = sum(self._db.execute(sql, row).rowcount for row in rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return changed

    # -- results ---------------------------------------------------------------------------

    def put(
        self,
        key: str,
        payload: Mapping[str, Any],
        file: FileStamp | None = None,
        failed: str | None = None,
    ) -> bool:
        """Store one result as pending (or as failed with the reason `failed`); False when
        the key is already there (nothing changes). Durable once it returns."""
        row = (
            key,
            json.dumps(payload, separators=(",", ":"), allow_nan=False),
            "pending" if failed is None else "failed",
            failed,
            now_iso(),
            file.path if file else None,
            file.size if file else None,
            file.mtime_ns if file else None,
        )
        sql = (
            "INSERT OR IGNORE INTO results (key, payload, state, last_error, created_at, path,"
            " size_bytes, mtime_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        return self._write(sql, [row]) == 1

    def peek(self, limit: int) -> list[OutboxItem]:
        """Up to `limit` pending results, oldest first (they stay pending)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, payload, attempts FROM results WHERE state = 'pending'"
                " ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [OutboxItem(key, json.loads(payload), attempts) for key, payload, attempts in rows]

    def mark_sent(self, keys: Iterable[str]) -> int:
        """The server has these results (stored now or before); returns rows changed."""
        keys = list(keys)
        if not keys:
            return 0
        when = now_iso()
        changed = self._write(
            "UPDATE results SET state = 'sent', sent_at = ?, last_error = NULL"
            " WHERE key = ? AND state = 'pending'",
            [(when, key) for key in keys],
        )
        self.set_meta("last_forward_at", when)
        return changed

    def mark_failed(self, key: str, reason: str) -> bool:
        """This result will never be sent (the server refused it for good)."""
        sql = (
            "UPDATE results SET state = 'failed', last_error = ? WHERE key = ? AND state != 'sent'"
        )
        return self._write(sql, [(reason, key)]) == 1

    def note_attempt(self, keys: Iterable[str], error: str) -> int:
        """A try that did not settle these results: they stay pending, attempts + 1."""
        return self._write(
            "UPDATE results SET attempts = attempts + 1, last_error = ?"
            " WHERE key = ? AND state = 'pending'",
            [(error, key) for key in keys],
        )

    def get(self, key: str) -> dict[str, Any] | None:
        """One row as a dict (payload decoded), or None."""
        with self._lock:
            cursor = self._db.execute("SELECT * FROM results WHERE key = ?", (key,))
            row = cursor.fetchone()
            names = [d[0] for d in cursor.description]
        if row is None:
            return None
        found = dict(zip(names, row, strict=True))
        found["payload"] = json.loads(found["payload"]) if found["payload"] else None
        return found

    def depth(self) -> dict[str, int]:
        """Rows by state: {"pending": n, "sent": n, "failed": n}."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM results GROUP BY state").fetchall()
        counts = dict.fromkeys(STATES, 0)
        counts.update(dict(rows))
        return counts

    def last_forward(self) -> str | None:
        """When the server last acknowledged results (ISO 8601, UTC), or None."""
        return self.get_meta("last_forward_at")

    def has_file(self, stamp: FileStamp) -> bool:
        """Whether a result (of any state) came from this file as it is now."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM results WHERE path = ? AND size_bytes = ? AND mtime_ns = ? LIMIT 1",
                (stamp.path, stamp.size, stamp.mtime_ns),
            ).fetchone()
        return row is not None

    def compact(self, days: float = 30.0) -> int:
        """Empty the payload of results sent more than `days` ago (the row stays, so the
        file is still known as handled); returns how many."""
        cutoff = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="milliseconds")
        return self._write(
            "UPDATE results SET payload = ''"
            " WHERE state = 'sent' AND sent_at < ? AND payload != ''",
            [(cutoff,)],
        )

    # -- small facts for `edge status` ------------------------------------------------------

    def set_meta(self, name: str, value: Any) -> None:
        self._write(
            "INSERT INTO meta (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [(name, json.dumps(value))],
        )

    def get_meta(self, name: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return default if row is None else json.loads(row[0])
