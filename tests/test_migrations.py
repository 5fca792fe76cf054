"""Migrations on databases that already hold data: upgrades keep what is there."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from conftest import POSTGRES_URL
from mailer.store.database import MIGRATIONS_DIR, create_store_engine, upgrade


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A brand-new, unmigrated database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("MAILER_TEST_DATABASE_URL is not set: PostgreSQL tests skipped")
    admin_url = make_url(POSTGRES_URL).set(drivername="postgresql+psycopg")
    name = f"mailer_migrate_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_duplicate_active_suppressions_are_kept_as_history(empty_database: str) -> None:
    """0003 adds a unique index on suppressions in force; copies recorded before it are
    marked lifted, not deleted, and the first stays in force."""
    engine = create_store_engine(empty_database)
    with engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
        for _ in range(3):
            connection.execute(
                text(
                    "INSERT INTO suppressions (email_key, list_id, reason, source, created_at) "
                    "VALUES ('a@example.org', NULL, 'unsubscribed', 'page', :at)"
                ),
                {"at": "2026-01-01 00:00:00"},
            )
    assert upgrade(engine)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT id, lifted_at IS NULL FROM suppressions ORDER BY id")
        ).all()
    engine.dispose()
    assert [(row[0], bool(row[1])) for row in rows] == [(1, True), (2, False), (3, False)]
