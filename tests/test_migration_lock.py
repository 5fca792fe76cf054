"""SQLite's migration lock file (`NAME.migrate-lock`): any user who can write the database
can take it, whoever made it first, and a lock file that cannot be opened does not stop
an upgrade (the migration's BEGIN IMMEDIATE still lets one process in at a time)."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

from mailer.store.database import (
    MIGRATIONS_DIR,
    _migration_lock,
    create_store_engine,
    current_revision,
    head_revision,
    upgrade,
)

NOBODY = 65534


def migration_lock_path(database: str) -> str:
    return f"{database}.migrate-lock"


def _one_revision_behind(database: Path) -> None:
    """A store whose schema is one revision behind head, so the next start migrates."""
    engine = create_engine(f"sqlite:///{database}")  # foreign keys off, as upgrade() runs them
    behind = _previous_revision()
    with engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        command.upgrade(config, behind)
    engine.dispose()
    assert _revision(database) == behind


def _revision(database: Path) -> str | None:
    """Read with an engine let go at once: an open connection would keep root's -wal and
    -shm files beside the database for another user's process to find unwritable."""
    engine = create_store_engine(f"sqlite:///{database}")
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def _previous_revision() -> str:
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    newest = head_revision()
    assert newest is not None
    head = ScriptDirectory.from_config(config).get_revision(newest)
    assert head is not None
    assert isinstance(head.down_revision, str)
    return head.down_revision


@pytest.fixture
def shared_directory() -> Iterator[Path]:
    """A directory any user may write in (pytest's tmp_path is its owner's only)."""
    with tempfile.TemporaryDirectory() as name:
        os.chmod(name, 0o777)  # noqa: S103 -- the point: another user writes here
        yield Path(name)


def _upgrade_as(uid: int, url: str, said: multiprocessing.Queue[str]) -> None:
    os.setgroups([])  # root's groups too: the other user has none of them
    os.setgid(uid)
    os.setuid(uid)
    try:
        upgrade(create_store_engine(url))
    except Exception as exc:  # reported to the test, which names it
        said.put(f"{type(exc).__name__}: {exc}")
    else:
        said.put("upgraded")


@pytest.mark.skipif(os.geteuid() != 0, reason="changing user needs root")
def test_another_user_upgrades_after_root_made_the_lock_file(shared_directory: Path) -> None:
    database = shared_directory / "mailer.db"
    _one_revision_behind(database)
    os.chmod(database, 0o666)  # noqa: S103 -- the store is shared: anyone may write it
    lock = Path(migration_lock_path(str(database)))
    lock.touch(mode=0o644)  # as an earlier root run left it: root's, not writable by others
    os.chown(lock, 0, 0)
    context = multiprocessing.get_context("fork")
    said: multiprocessing.Queue[str] = context.Queue()
    child = context.Process(
        target=_upgrade_as, args=(NOBODY, f"sqlite:///{database}", said), daemon=True
    )
    child.start()
    outcome = said.get(timeout=60)
    child.join(timeout=10)
    assert outcome == "upgraded"
    assert _revision(database) == head_revision()


def test_the_lock_file_has_the_databases_permissions_and_follows_a_symlink(
    tmp_path: Path,
) -> None:
    database = tmp_path / "mailer.db"
    _one_revision_behind(database)
    os.chmod(database, 0o640)
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "elsewhere" / "link.db"
    link.symlink_to(database)
    engine = create_store_engine(f"sqlite:///{link}")
    assert upgrade(engine)
    engine.dispose()
    assert not Path(migration_lock_path(str(link))).exists()
    assert os.stat(migration_lock_path(str(database))).st_mode & 0o777 == 0o640


def test_a_lock_file_that_cannot_be_opened_does_not_stop_the_upgrade(tmp_path: Path) -> None:
    database = tmp_path / "mailer.db"
    _one_revision_behind(database)
    Path(migration_lock_path(str(database))).symlink_to(tmp_path / "nowhere" / "lock")
    engine = create_store_engine(f"sqlite:///{database}")
    assert upgrade(engine)
    engine.dispose()
    assert _revision(database) == head_revision()


def test_the_lock_is_let_go_even_if_a_child_was_forked_while_it_was_held(
    tmp_path: Path,
) -> None:
    """A process forked inside the block shares the lock file's open description: closing
    our descriptor alone would leave the lock held until that child exits."""
    database = tmp_path / "mailer.db"
    engine = create_store_engine(f"sqlite:///{database}")
    release_child, child_may_exit = os.pipe()
    with _migration_lock(engine):
        child = os.fork()
        if child == 0:  # pragma: no cover -- the child only waits to be told to exit
            os.read(release_child, 1)
            os._exit(0)
    try:
        descriptor = os.open(migration_lock_path(str(database)), os.O_RDWR)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if held
        finally:
            os.close(descriptor)
    finally:
        os.write(child_may_exit, b"x")
        os.waitpid(child, 0)
        engine.dispose()
