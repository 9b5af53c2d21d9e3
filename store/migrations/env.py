"""Alembic environment: runs on the connection `store.store.upgrade` hands over (no alembic.ini)."""

from __future__ import annotations

from alembic import context

from store.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("store migrations run through store.store.upgrade(engine), which supplies the connection")

# render_as_batch: SQLite can't ALTER most things; batch mode rebuilds tables so later revisions work there too.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
