"""Alembic environment: runs on the engine marco_svc.db.migrate hands over."""

from __future__ import annotations

from alembic import context

from marco_svc.db.models import Base

engine = context.config.attributes.get("engine")
if engine is None:
    raise RuntimeError("run migrations through `marco-svc db upgrade`")

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
