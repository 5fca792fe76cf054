"""Opening the database: engine, SQLite pragmas, and migrations applied on first use.

Alembic is imported only to migrate: every command that opens the store checks first,
without it, whether the schema is already at the newest revision (it nearly always is).
Importing alembic cost each such command 0.2-0.5 s of its start-up.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import re
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from mailer.errors import ConfigError, StoreError
from mailer.store.sqlite_writer import (
    WriterLockedConnection,
    migration_lock_path,
    open_lock_file,
)

if TYPE_CHECKING:
    from alembic.config import Config

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
        # Each process opens its own short-lived connections; writers wait up to 30 s,
        # for a file's write lock (sqlite_writer) rather than in SQLite's busy handler.
        kwargs["connect_args"] = {"timeout": 30}
        if database and database != ":memory:" and not parsed.query.get("uri"):
            kwargs["connect_args"]["factory"] = WriterLockedConnection
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
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest revision, as alembic reads the migration scripts."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The database's revision, as alembic reads it (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


# A migration script's own lines naming its place in the chain, as `alembic revision`
# writes them (script.py.mako), a string or None each; a script written otherwise leaves
# the check to alembic.
_CHAIN_LINE = re.compile(
    r"""^(revision|down_revision|branch_labels|depends_on)\s*(?::[^=]*)?="""
    r"""\s*(None|"[^"]*"|'[^']*')\s*$""",
    re.MULTILINE,
)


@functools.cache
def scripts_head(versions: Path = MIGRATIONS_DIR / "versions") -> str | None:
    """The newest revision, read from the scripts' text without importing them or
    alembic; None when that is not certain (a merge, a branch label, a dependency, a
    script of another shape, not exactly one head): then alembic decides."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in versions.glob("*.py"):
        if path.name == "__init__.py":  # alembic skips it too
            continue
        found = _CHAIN_LINE.findall(path.read_text("utf-8"))
        lines = {name: None if value == "None" else value[1:-1] for name, value in found}
        if len(found) != 4 or len(lines) != 4:  # each line once
            return None
        revision, parent = lines["revision"], lines["down_revision"]
        if not revision or lines["branch_labels"] or lines["depends_on"]:
            return None
        revisions.add(revision)
        if parent:
            parents.add(parent)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _known_at_head(engine: Engine) -> bool:
    """True when the database is certainly at the scripts' newest revision, found
    without alembic; False when it is not, or when that is not certain."""
    head = scripts_head()
    if head is None:
        return False
    with engine.connect() as connection:
        # alembic's own table (MigrationContext reads it the same way)
        if not inspect(connection).has_table("alembic_version"):
            return False
        stored = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    return [tuple(row) for row in stored] == [(head,)]


def upgrade(engine: Engine) -> bool:
    """Bring the schema to the newest revision; returns True if anything was applied.

    Two processes starting together (two workers, the web app and a worker) must not both
    migrate: PostgreSQL takes an advisory lock, SQLite a file lock beside the database.

    All pending migrations run in one transaction on one connection. On SQLite that
    connection runs them with foreign keys OFF (see _sqlite_migration_mode) and checks
    them all (`PRAGMA foreign_key_check`) before it commits: a violation fails the upgrade
    and nothing of it is kept.
    """
    try:
        if _known_at_head(engine):
            return False
        if current_revision(engine) == head_revision():  # what alembic says, when unsure
            return False
        from alembic import command
        from alembic.runtime.migration import MigrationContext

        with (
            _migration_lock(engine),
            engine.connect() as connection,
            _sqlite_migration_mode(connection),
            connection.begin(),
        ):
            if engine.dialect.name == "sqlite":
                # pysqlite would open the transaction only at the first INSERT/UPDATE,
                # committing each CREATE/DROP/ALTER before it on its own.
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            elif engine.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK}
                )
            revision = MigrationContext.configure(connection).get_current_revision()
            if revision == head_revision():
                return False
            command.upgrade(_alembic_config(connection), "head")
            _check_foreign_keys(connection)
            return True
    except OperationalError as exc:
        raise StoreError(
            f"cannot reach the database: {exc.orig}",
            hint="Check MAILER_DATABASE_URL and that the database server is running.",
        ) from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"migrating the database failed: {exc}") from exc


@contextmanager
def _sqlite_migration_mode(connection: Connection) -> Iterator[None]:
    """On SQLite, foreign keys OFF for the migrations run inside, back ON after.

    A migration that rebuilds a table (SQLite's way to change most of a table, see
    https://www.sqlite.org/lang_altertable.html#otheralter) drops the old one; with foreign
    keys ON that DROP first deletes every row, and ON DELETE CASCADE every row referring to
    them (a person's memberships, deliveries, answers). The pragma is ignored inside a
    transaction, so it is set here, before upgrade() begins one, and the driver's own
    transaction handling is off (upgrade() says BEGIN itself) until the pragma is back on.
    A connection left with foreign keys off is never handed out again: it is discarded.
    Nothing happens on other databases.
    """
    if connection.dialect.name != "sqlite":
        yield
        return
    driver = connection.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    if driver.in_transaction:  # a pooled connection is returned with nothing open
        raise StoreError("migrating the database failed: its connection is in a transaction")
    driver.execute("PRAGMA foreign_keys=OFF")
    legacy_isolation = driver.isolation_level
    driver.isolation_level = None
    try:
        yield
    finally:
        try:
            driver.isolation_level = legacy_isolation
            driver.execute("PRAGMA foreign_keys=ON")
            back_on = driver.execute("PRAGMA foreign_keys").fetchone() == (1,)
        except sqlite3.Error:
            back_on = False
        if not back_on:
            connection.invalidate()


def _check_foreign_keys(connection: Connection) -> None:
    """On SQLite, fail the migration run (before it commits) if any row refers to one that
    does not exist: with foreign keys off, nothing else would have noticed."""
    if connection.dialect.name != "sqlite":
        return
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        table, rowid, parent, _ = broken[0]
        raise StoreError(
            f"migrating the database failed: {len(broken)} row(s) refer to rows that do not "
            f"exist (first: {table} row {rowid} names a missing {parent} row); "
            "nothing was changed",
            hint="Restore a backup, or remove those rows with the sqlite3 shell "
            "(PRAGMA foreign_key_check lists them), then start again.",
        )


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Two processes starting together: one migrates, the other waits and finds it done.
    The file is opened as the write lock's is (the database's permissions and owner): it
    was opened for appending with the umask's, so after a migration run as root another
    user's next upgrade failed with a raw PermissionError. Where it cannot be opened, the
    migration's BEGIN IMMEDIATE still lets one process in at a time."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    descriptor = open_lock_file(database, migration_lock_path)
    if descriptor is None:
        yield
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        # Let go before closing: a process forked meanwhile shares the open file, and
        # closing only our descriptor would leave the lock held until that child exits.
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)
