"""What a running command or service holds: settings and an upgraded database."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from marco_svc.config import Settings, load_settings
from marco_svc.db import migrate
from marco_svc.db.session import Database
from marco_svc.file_store import apply_umask
from marco_svc.work_queue import InProcessScoringQueue, ScoringQueue, WakeUpQueue

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    scoring_queue: ScoringQueue = field(default_factory=InProcessScoringQueue)

    def close(self) -> None:
        self.db.dispose()


def open_runtime(settings: Settings | None = None, upgrade: bool | None = None) -> Runtime:
    """Connect to the configured database and bring (or check) its schema up to date.

    The process then writes files with the service's permission policy (`file_store`).
    """
    settings = settings or load_settings()
    apply_umask()
    db = Database(settings.resolved_database_url)
    try:
        if settings.auto_upgrade if upgrade is None else upgrade:
            before = migrate.check_not_newer(db.engine)
            if before != migrate.head_revision():
                log.info(
                    "upgrading database schema from %s to %s",
                    before or "nothing",
                    migrate.head_revision(),
                )
                migrate.upgrade(db.engine)
        else:
            migrate.require_current(db.engine)
    except BaseException:
        db.dispose()
        raise
    queue: ScoringQueue = WakeUpQueue() if settings.broker_url else InProcessScoringQueue()
    return Runtime(settings, db, queue)
