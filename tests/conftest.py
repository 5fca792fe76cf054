"""Shared fixtures: stores on real SQLite files and on the real local PostgreSQL server.

PostgreSQL tests run when MAILER_TEST_DATABASE_URL is set (.ci/run sets it). Each test
session (each xdist worker) creates its own database and drops it at the end, so nothing
depends on what the server held before.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from mailer.store import Store
from mailer.store.schema import metadata

POSTGRES_URL = os.environ.get("MAILER_TEST_DATABASE_URL")
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mailer.db'}"


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[Store]:
    store = Store.open(sqlite_url)
    yield store
    store.close()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session; dropped afterwards."""
    if not POSTGRES_URL:
        pytest.skip("MAILER_TEST_DATABASE_URL is not set: PostgreSQL tests skipped")
    admin_url = make_url(POSTGRES_URL).set(drivername="postgresql+psycopg")
    name = f"mailer_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    try:
        Store.open(url).close()  # apply migrations once
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# A table with more rows than this is emptied with TRUNCATE, the others with DELETE.
TRUNCATE_FROM = 1000


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    """The session's PostgreSQL database, emptied before the test, every sequence back
    at 1.

    TRUNCATE of every table took 280 ms a test (median, 15 calls, load 5), a new file for
    each table and index; DELETE of the few rows most tests leave, 80 ms. A table a test
    filled (thousands of rows) is still truncated: deleting them would take longer and
    leave the dead rows to the next tests."""
    tables = metadata.sorted_tables
    engine = create_engine(postgres_database)
    with engine.begin() as connection:
        counted = [select(func.count()).select_from(t).scalar_subquery() for t in tables]
        counts = connection.execute(select(*counted)).one()
        rows = dict(zip((t.name for t in tables), counts, strict=True))
        big = [name for name, count in rows.items() if count > TRUNCATE_FROM]
        if big:
            listed = ", ".join(f'"{name}"' for name in big)
            connection.execute(text(f"TRUNCATE {listed} CASCADE"))
        for table in reversed(tables):  # rows that refer to others first
            if 0 < rows[table.name] <= TRUNCATE_FROM:
                connection.execute(table.delete())
        connection.execute(text("SELECT setval(oid, 1, false) FROM pg_class WHERE relkind = 'S'"))
    engine.dispose()
    return postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """The same test on a real SQLite file and on the real local PostgreSQL."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = Store.open(database_url)
    yield opened
    opened.close()


# Every async test runs on asyncio's own loop; one marked `every_event_loop` (a module's
# pytestmark) runs on uvloop's as well: the SMTP transport's tests, since a sender can run
# on either (bench/README.md, uvloop).
def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    if item.get_closest_marker("every_event_loop") is None:
        return {"asyncio": asyncio.new_event_loop}
    import uvloop

    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


# The real SMTP test server (aiosmtpd on port 0) and its fixtures: see tests/smtp_server.py.
# A scripted relay (faults aiosmtpd cannot make) and a transport for it: tests/scripted_relay.py.
from scripted_relay import start_relay  # noqa: E402
from smtp_server import (  # noqa: E402
    smtp_server,
    smtp_server_process,
    smtp_server_thread,
    tls_files,
)

__all__ = ["smtp_server", "smtp_server_process", "smtp_server_thread", "start_relay", "tls_files"]
