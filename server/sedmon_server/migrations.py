"""Apply the Alembic migrations programmatically, one process at a time.

The migrations folder is found inside the installed wheel (sedmon_server/migrations, which
server/pyproject.toml force-includes) or else at the repository root. Several processes
starting together are serialised: on PostgreSQL by a session advisory lock held on the
migrating connection, on SQLite by an exclusive file lock beside the database file.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, make_url, text

ADVISORY_LOCK_KEY = 0x5ED_0001
"""Key of the PostgreSQL advisory lock that serialises migrations across processes."""


def migrations_dir() -> Path:
    """The folder holding env.py and versions/: in the wheel, else at the repository root."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "migrations", here.parents[1] / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("sedmon_server migrations folder not found (wheel or repo root)")


def _config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["connection"] = connection
    return cfg


@contextmanager
def _start_lock(engine: Engine, connection: Connection) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
        connection.commit()
        try:
            yield
        finally:
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
            connection.commit()
        return
    database = make_url(str(engine.url)).database
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database of `engine` up to `revision` (default: the newest)."""
    with engine.connect() as conn, _start_lock(engine, conn):
        command.upgrade(_config(conn), revision)
        conn.commit()


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the database of `engine` down to `revision` ("base" empties it)."""
    with engine.connect() as conn, _start_lock(engine, conn):
        command.downgrade(_config(conn), revision)
        conn.commit()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, None when it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
