"""SQL storage: models, engine and sessions, migrations."""

from marco_svc.db.session import Database, DatabaseURLError

__all__ = ["Database", "DatabaseURLError"]
