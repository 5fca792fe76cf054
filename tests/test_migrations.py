"""Migrations on databases that already hold data: upgrades keep what is there."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from conftest import POSTGRES_URL
from mailer.store.database import (
    MIGRATIONS_DIR,
    create_store_engine,
    current_revision,
    head_revision,
    scripts_head,
    upgrade,
)


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


# -- opening a store at the newest revision needs no alembic -----------------------------


def test_the_head_read_from_the_scripts_is_alembics() -> None:
    assert scripts_head() == head_revision() is not None


def _script(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(f'"""A migration."""\n\n{body}\n', encoding="utf-8")


CHAIN = 'revision = "{}"\ndown_revision = {}\nbranch_labels = None\ndepends_on = None'


def test_scripts_of_another_shape_leave_the_head_to_alembic(tmp_path: Path) -> None:
    """A merge, a branch label, a dependency, two heads or an unusual line: not certain,
    so None (alembic then reads the scripts itself)."""
    chain = tmp_path / "chain"
    chain.mkdir()
    _script(chain, "__init__", "")
    _script(chain, "a", CHAIN.format("a", "None"))
    _script(
        chain,
        "b",
        'revision: str = "b"\ndown_revision: str | None = "a"\n'
        "branch_labels = None\ndepends_on = None",
    )
    # as `alembic revision` writes it (repr: single quotes) before the formatter runs
    _script(chain, "c", CHAIN.replace('"', "'").format("c", "'b'"))
    assert scripts_head(chain) == "c"
    shapes = {
        "merge": CHAIN.format("m", '("a", "b")'),
        "label": CHAIN.format("m", '"b"').replace("branch_labels = None", 'branch_labels = "x"'),
        "depends": CHAIN.format("m", '"b"').replace("depends_on = None", 'depends_on = "a"'),
        "two heads": CHAIN.format("m", '"a"'),
        "computed": CHAIN.format("m", '"b"').replace('revision = "m"', "revision = NAME"),
        "twice": CHAIN.format("m", '"b"') + '\nrevision = "n"',
    }
    for shape, body in shapes.items():
        folder = tmp_path / shape.replace(" ", "-")
        folder.mkdir()
        _script(folder, "a", CHAIN.format("a", "None"))
        _script(folder, "b", CHAIN.format("b", '"a"'))
        _script(folder, "m", body)
        assert scripts_head(folder) is None, shape


def test_opening_a_store_at_the_newest_revision_does_not_import_alembic(
    empty_database: str, tmp_path: Path
) -> None:
    """A new database is migrated (alembic); once it is at the newest revision, opening
    it (as every command does) checks that without importing alembic. A database one
    revision behind is migrated again."""
    script = (
        "import sys\n"
        "from mailer.store import Store\n"
        "Store.open(sys.argv[1]).close()\n"
        "print('alembic' in sys.modules)\n"
    )

    def opened_with_alembic() -> bool:
        result = subprocess.run(
            [sys.executable, "-c", script, empty_database],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return {"True\n": True, "False\n": False}[result.stdout]

    engine = create_store_engine(empty_database)
    try:
        assert current_revision(engine) is None
        assert opened_with_alembic()  # migrated
        assert current_revision(engine) == head_revision()
        assert not opened_with_alembic()
        with engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS_DIR))
            config.attributes["connection"] = connection
            command.downgrade(config, "-1")
        assert current_revision(engine) != head_revision()
        assert opened_with_alembic()  # migrated again
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
