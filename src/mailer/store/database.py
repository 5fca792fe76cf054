"""Opening the database: engine, SQLite pragmas, and migrations applied on first use."""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from mailer.errors import ConfigError, StoreError

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_PG_MIGRATION_LOCK = int.from_bytes(hashlib.sha256(b"mailer-migrations").digest()[:7], "big")


def create_store_engine(url: str) -> Engine:
    """An engine for `url`; for SQLite, creates the parent folder and sets WAL and foreign keys."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"MAILER_DATABASE_URL: not a database URL: {url!r}", setting="MAILER_DATABASE_URL"
        ) from exc
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # Each process opens its own short-lived connections; writers wait up to 30 s.
        kwargs["connect_args"] = {"timeout": 30}
    elif parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        engine = create_engine(parsed, pool_pre_ping=True, **kwargs)
    except (ArgumentError, ImportError) as exc:
        raise ConfigError(f"MAILER_DATABASE_URL: {exc}", setting="MAILER_DATABASE_URL") from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    elif engine.dialect.name == "postgresql":
        event.listen(engine, "connect", _name_the_connection)
    return engine


def _name_the_connection(dbapi_connection: Any, _record: Any) -> None:
    """pg_stat_activity says which process each connection is (`mailer HOST:PID`): with
    several senders on several machines, an operator can tell them apart."""
    with dbapi_connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('application_name', %s, false)",
            (f"mailer {socket.gethostname()}:{os.getpid()}"[:63],),
        )
    dbapi_connection.commit()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers (the web app) never block the sender's writes, and vice versa.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # NORMAL is durable across application crashes in WAL mode; only power loss can drop
    # the last commits, and the ledger's `unknown` state covers that window.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> bool:
    """Bring the schema to the newest revision; returns True if anything was applied.

    Two processes starting together (two workers, the web app and a worker) must not both
    migrate: PostgreSQL takes an advisory lock, SQLite a file lock beside the database.
    """
    try:
        if current_revision(engine) == head_revision():
            return False
        with _migration_lock(engine), engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK}
                )
            if MigrationContext.configure(connection).get_current_revision() == head_revision():
                return False
            command.upgrade(_alembic_config(connection), "head")
            return True
    except OperationalError as exc:
        raise StoreError(
            f"cannot reach the database: {exc.orig}",
            hint="Check MAILER_DATABASE_URL and that the database server is running.",
        ) from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"migrating the database failed: {exc}") from exc


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    lock_path = Path(database + ".migrate-lock")
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
