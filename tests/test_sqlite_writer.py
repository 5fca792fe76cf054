"""SQLite's write lock file (mailer.store.sqlite_writer): taken before a write begins, let
go when its transaction ends, never by a reader, freed by a process that dies, and
waited for instead of SQLite's busy handler."""

from __future__ import annotations

import fcntl
import gc
import multiprocessing
import os
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from mailer.store import Store
from mailer.store.database import create_store_engine
from mailer.store.sqlite_writer import WriterLockedConnection, lock_path


def lock_is_held(database: Path) -> bool:
    """True if someone holds the database's write lock file (tried from a file of our own)."""
    descriptor = os.open(lock_path(str(database)), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)  # frees it if we took it
    return False


def connect(
    database: Path, *, timeout: float = 5.0, autocommit: bool = False
) -> WriterLockedConnection:
    connection = sqlite3.connect(
        database,
        timeout=timeout,
        isolation_level=None if autocommit else "DEFERRED",
        check_same_thread=False,
        factory=WriterLockedConnection,
    )
    assert isinstance(connection, WriterLockedConnection)
    return connection


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "t.db"
    with connect(path) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)")
    setup.close()
    return path


def test_a_write_transaction_holds_the_lock_until_it_ends(database: Path) -> None:
    connection = connect(database)
    connection.execute("INSERT INTO t (v) VALUES ('a')")  # pysqlite began a transaction
    assert connection.in_transaction
    assert connection.holds_write_lock
    assert lock_is_held(database)
    connection.commit()
    assert not connection.holds_write_lock
    assert not lock_is_held(database)

    cursor = connection.cursor()
    cursor.executemany("INSERT INTO t (v) VALUES (?)", [("b",), ("c",)])
    assert lock_is_held(database)
    connection.rollback()
    assert not lock_is_held(database)
    assert connection.execute("SELECT count(*) FROM t").fetchone() == (1,)
    connection.close()


def test_readers_never_take_it(database: Path) -> None:
    writer = connect(database)
    writer.execute("INSERT INTO t (v) VALUES ('a')")
    reader = connect(database)
    # WAL: the reader is not held up by the open write, and takes nothing
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert not reader.holds_write_lock
    writer.commit()
    assert not lock_is_held(database)
    assert reader.execute("SELECT v FROM t").fetchall() == [("a",)]
    assert not reader.holds_write_lock
    assert not lock_is_held(database)
    reader.close()
    writer.close()


def test_autocommit_writes_and_failed_statements_let_it_go(database: Path) -> None:
    connection = connect(database, autocommit=True)  # every statement its own
    connection.execute("INSERT INTO t (v) VALUES ('a')")
    assert not connection.in_transaction
    assert not lock_is_held(database)
    with pytest.raises(sqlite3.IntegrityError):
        connection.execute("INSERT INTO t (v) VALUES ('a')")
    assert not lock_is_held(database)
    with pytest.raises(sqlite3.OperationalError):
        connection.execute("UPDATE no_such_table SET x = 1")
    assert not lock_is_held(database)
    connection.execute("BEGIN IMMEDIATE")  # an explicit transaction holds it
    assert lock_is_held(database)
    connection.execute("COMMIT")
    assert not lock_is_held(database)
    connection.close()


def test_a_writer_waits_for_the_lock_not_in_sqlites_busy_handler(database: Path) -> None:
    """With SQLite's own busy timeout at 0, a write made while another connection holds a
    write transaction would fail at once ("database is locked"); it waits for the lock file
    instead, and goes through when the first one commits."""
    first = connect(database)
    first.execute("INSERT INTO t (v) VALUES ('first')")
    second = connect(database)
    second.execute("PRAGMA busy_timeout = 0")
    waiting = threading.Event()
    outcome: list[object] = []

    def write() -> None:
        try:
            second.execute("INSERT INTO t (v) VALUES ('second')")
            second.commit()
            outcome.append("written")
        except sqlite3.Error as exc:  # pragma: no cover - what the lock prevents
            outcome.append(exc)

    original = second._pause  # the test's view of the wait

    def pause(seconds: float) -> None:
        waiting.set()
        original(seconds)

    second._pause = pause
    thread = threading.Thread(target=write)
    thread.start()
    assert waiting.wait(30), "the second writer never waited for the lock"
    assert outcome == []  # still waiting, the first transaction open
    first.commit()
    thread.join(30)
    assert outcome == ["written"]
    assert first.execute("SELECT v FROM t ORDER BY id").fetchall() == [("first",), ("second",)]
    first.close()
    second.close()


def test_a_writer_that_waited_its_whole_timeout_fails_as_sqlite_would(database: Path) -> None:
    first = connect(database)
    first.execute("INSERT INTO t (v) VALUES ('first')")
    second = connect(database, timeout=0.05)
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        second.execute("INSERT INTO t (v) VALUES ('second')")
    assert not second.holds_write_lock
    first.commit()
    second.execute("INSERT INTO t (v) VALUES ('second')")  # free again
    second.commit()
    first.close()
    second.close()


def test_a_connection_dropped_without_close_frees_it(database: Path) -> None:
    connection = connect(database)
    connection.execute("INSERT INTO t (v) VALUES ('a')")
    assert lock_is_held(database)
    del connection
    gc.collect()
    assert not lock_is_held(database)


def _hold_and_wait(database: str, ready: multiprocessing.synchronize.Event) -> None:
    connection = sqlite3.connect(database, factory=WriterLockedConnection)
    connection.execute("INSERT INTO t (v) VALUES ('dying')")
    ready.set()
    threading.Event().wait()  # until killed


def test_a_process_killed_holding_it_frees_it(database: Path) -> None:
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    child = context.Process(target=_hold_and_wait, args=(str(database), ready))
    child.start()
    try:
        assert ready.wait(60), "the child never began its write"
        assert lock_is_held(database)
    finally:
        child.kill()
        child.join(30)
    assert not lock_is_held(database)
    survivor = connect(database)
    survivor.execute("PRAGMA busy_timeout = 0")  # SQLite's lock is free too
    survivor.execute("INSERT INTO t (v) VALUES ('after')")
    survivor.commit()
    assert survivor.execute("SELECT v FROM t").fetchall() == [("after",)]
    survivor.close()


def test_the_store_uses_it_for_a_file_and_lets_go_on_an_error(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'mailer.db'}")
    with engine.connect() as connection:
        assert isinstance(connection.connection.driver_connection, WriterLockedConnection)
    memory = create_store_engine("sqlite:///:memory:")
    with memory.connect() as connection:
        assert type(connection.connection.driver_connection) is sqlite3.Connection
    memory.dispose()
    engine.dispose()

    store = Store.open(f"sqlite:///{tmp_path / 'mailer.db'}")
    held_inside: list[bool] = []

    def twice() -> None:
        with store.engine.begin() as connection:
            connection.execute(text("INSERT INTO rate_budgets (name, tat) VALUES ('x', 1.0)"))
            held_inside.append(lock_is_held(tmp_path / "mailer.db"))
            connection.execute(text("INSERT INTO rate_budgets (name, tat) VALUES ('x', 2.0)"))

    with pytest.raises(IntegrityError):
        twice()
    assert held_inside == [True]
    assert not lock_is_held(tmp_path / "mailer.db")
    store.close()


@pytest.mark.parametrize(
    "statement",
    [
        "-- why\nINSERT INTO t (v) VALUES ('a')",
        "/* why */ insert into t (v) values ('a')",
        "  BEGIN\n IMMEDIATE",
        "SAVEPOINT s",
    ],
)
def test_writes_behind_comments_spaces_and_savepoints_take_it(
    database: Path, statement: str
) -> None:
    connection = connect(database)
    connection.execute(statement)
    assert connection.in_transaction
    assert lock_is_held(database)
    connection.rollback()
    assert not lock_is_held(database)
    connection.close()


@pytest.mark.parametrize(
    "statement", ["SELECT 1", "PRAGMA foreign_keys = ON", "PRAGMA busy_timeout"]
)
def test_reads_and_connection_settings_do_not(database: Path, statement: str) -> None:
    connection = connect(database)
    connection.execute("BEGIN IMMEDIATE")  # held: a statement that took it would wait here
    other = connect(database, timeout=30)

    def no_wait(_seconds: float) -> None:
        raise AssertionError(f"{statement!r} waited for the write lock")

    other._pause = no_wait  # a wait would fail here, not pass after the 30 s timeout
    other.execute(statement)
    assert not other.holds_write_lock
    connection.rollback()
    other.close()
    connection.close()


def test_transactions_ended_by_sqlite3_itself_let_it_go(database: Path) -> None:
    """`with connection:` commits in C, and so does setting isolation_level to None; a
    cursor's executescript commits first and runs the script whole."""
    connection = connect(database)
    with connection:
        connection.execute("INSERT INTO t (v) VALUES ('a')")
        assert lock_is_held(database)
    assert not lock_is_held(database)

    connection.execute("INSERT INTO t (v) VALUES ('b')")
    connection.isolation_level = None
    assert connection.isolation_level is None
    assert not lock_is_held(database)

    cursor = connection.cursor()
    cursor.executescript("INSERT INTO t (v) VALUES ('c'); INSERT INTO t (v) VALUES ('d');")
    assert not lock_is_held(database)
    assert connection.execute("SELECT count(*) FROM t").fetchone() == (4,)
    connection.close()


def test_after_waiting_its_timeout_sqlite_is_asked_without_waiting_again(
    database: Path,
) -> None:
    """The wait is the timeout, not twice it: the statement runs with SQLite's busy timeout
    at 0, which is put back after."""
    first = connect(database)
    first.execute("INSERT INTO t (v) VALUES ('first')")
    second = connect(database, timeout=0.05)
    second.execute("PRAGMA busy_timeout = 20000")  # 20 s, were it waited again
    said: list[str] = []
    second.set_trace_callback(said.append)
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        second.execute("INSERT INTO t (v) VALUES ('second')")
    second.set_trace_callback(None)
    assert said[:2] == ["PRAGMA busy_timeout", "PRAGMA busy_timeout = 0"]
    assert said[-1] == "PRAGMA busy_timeout = 20000"
    assert second.execute("PRAGMA busy_timeout").fetchone() == (20000,)
    first.rollback()
    first.close()
    second.close()


def test_the_lock_file_has_the_databases_permissions_and_follows_a_symlink(
    tmp_path: Path, database: Path
) -> None:
    os.chmod(database, 0o640)
    os.remove(lock_path(str(database)))  # made again by the next connection
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "elsewhere" / "link.db"
    link.symlink_to(database)
    through_link = connect(link)
    through_link.execute("INSERT INTO t (v) VALUES ('a')")
    assert lock_is_held(database)  # the real file's lock, not one beside the link
    assert not Path(lock_path(str(link))).exists()
    assert os.stat(lock_path(str(database))).st_mode & 0o777 == 0o640
    through_link.rollback()
    through_link.close()


def test_without_a_lock_file_sqlite_decides_as_before(tmp_path: Path, database: Path) -> None:
    os.remove(lock_path(str(database)))
    Path(lock_path(str(database))).symlink_to(tmp_path / "nowhere" / "lock")  # cannot be opened
    connection = connect(database)
    connection.execute("INSERT INTO t (v) VALUES ('a')")
    assert not connection.holds_write_lock
    connection.commit()
    assert connection.execute("SELECT v FROM t").fetchall() == [("a",)]
    connection.close()
