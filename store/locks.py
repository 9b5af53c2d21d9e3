"""Locks shared by every process that uses one database: schema creation and the trial queue.

Workers started at once on brand-new databases would each create the same tables (Optuna's,
MLflow's, ours) and each enqueue the same grid points; these locks make one of them do it while
the others wait, then re-check. They live outside any transaction and die with their holder, so a
killed worker never blocks the rest:

- PostgreSQL: a session advisory lock on a connection of its own (the server drops it when the
  connection goes);
- SQLite: an flock on a file beside the database (the kernel drops it when the process goes);
- anything else (an MLflow file store or tracking server, which migrate themselves): no lock.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from synpro.core.fs import file_lock


def _advisory_key(name: str) -> int:
    """A stable signed 64-bit key per lock name (PostgreSQL's advisory lock space)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for any other URL (or an in-memory SQLite)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


@contextmanager
def db_lock(url: str, name: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold the lock `name` of the database at `url`; yields whether it is held.

    With `wait=False` it yields False at once when another process holds it (SQLite and PostgreSQL).
    """
    path = sqlite_file(url)
    if path is not None:
        with file_lock(path.with_name(f"{path.name}.{name}.lock"), wait) as held:
            yield held
        return
    try:
        parsed = make_url(url)
    except ArgumentError:
        parsed = None
    if parsed is None or parsed.get_backend_name() != "postgresql":
        yield True
        return
    if parsed.drivername in ("postgres", "postgresql"):  # we ship psycopg 3, not SQLAlchemy's default psycopg2
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = create_engine(parsed, poolclass=NullPool)
    key = _advisory_key(name)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if wait:
                conn.execute(select(func.pg_advisory_lock(key)))
                held = True
            else:
                held = bool(conn.execute(select(func.pg_try_advisory_lock(key))).scalar_one())
            try:
                yield held
            finally:
                if held:
                    conn.execute(select(func.pg_advisory_unlock(key)))
    finally:
        engine.dispose()
