"""SQLite's one writer at a time, handed over promptly between threads and processes.

SQLite lets one connection write at a time; the others wait in its busy handler, which
sleeps 1, 2, 5, 10, 15, 20, 25 ... ms between tries and so wakes up to ten milliseconds or
more after the lock was let go. With several senders of one campaign on one machine
(`mailer send --processes N`), each claim (~20 ms), marking (~5 ms) and record made the
others sleep past its end, their queues run dry: two processes kept the two cores 89-90%
busy, 91-92% with this lock (bench/README, twelfth session).

Here each connection to a database file takes an advisory lock on a file beside it
(`NAME.write-lock`, flock) before the statement that begins a write transaction, and lets
it go once the transaction ends (commit, rollback, or a write statement in autocommit
mode). A writer that finds it taken tries again after 50 µs, doubling to at most 1 ms, so
it starts within a millisecond of the other's commit; by the time it asks SQLite, SQLite's
own lock is free and the busy handler is not entered. The operating system drops a flock
when its file is closed, so a process that dies holding it (kill -9 included) frees it at
once. Readers never take it: in WAL mode they do not wait for writers.

What it does not change: SQLite still decides (its own lock and busy timeout stay the
rule for anything that does not go through this connection class, such as the sqlite3
shell). A writer that has waited the connection's whole timeout for the file lock asks
SQLite once without waiting, which says "database is locked" if the database is still
held: a lock never let go (a thread holding a transaction open while it waits for
another) fails after the timeout, as it did, rather than hangs or waits twice. The lock
file gets the database's permissions (and owner, as SQLite's -wal does), beside the real
file when the path is a symlink; where it cannot be opened at all, SQLite's busy handler
decides alone, as before.
"""

from __future__ import annotations

import fcntl
import os
import re
import sqlite3
import stat
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

# How a statement that may begin a write transaction starts (WITH may be a read: taking the
# lock for one costs a reader a short wait, never a wrong answer).
_WRITES = (
    "INSERT",
    "UPDATE",
    "DELETE",
    "REPLACE",
    "WITH",
    "BEGIN IMMEDIATE",
    "BEGIN EXCLUSIVE",
    "CREATE",
    "DROP",
    "ALTER",
    "SAVEPOINT",
    "VACUUM",
    "ANALYZE",
    "REINDEX",
)
_WRITING_PRAGMAS = tuple(
    f"PRAGMA {name}"
    for name in ("USER_VERSION", "APPLICATION_ID", "WAL_CHECKPOINT", "INCREMENTAL_VACUUM")
)
_FIRST_TRY = 0.00005
_LAST_TRY = 0.001


def lock_path(database: str) -> str:
    return f"{database}.write-lock"


def migration_lock_path(database: str) -> str:
    return f"{database}.migrate-lock"


_COMMENTS = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))*", re.DOTALL)


def _begins_a_write(sql: str) -> bool:
    comments = _COMMENTS.match(sql)
    start = comments.end() if comments else 0
    head = " ".join(sql[start : start + 40].split()).upper()
    if head.startswith("PRAGMA"):  # those that write the file, not a connection's settings
        return head.startswith(_WRITING_PRAGMAS)
    return head.startswith(_WRITES)


def open_lock_file(database: str, name: Callable[[str], str] = lock_path) -> int | None:
    """The descriptor of the lock file `name(database)`, or None where it cannot be opened
    (then SQLite's own locking decides, as before): beside the real file (a symlink's
    target, as SQLite's -wal), with the database's permissions and owner, so any user who
    can write the database can take it, whoever made it first."""
    real = os.path.realpath(database)
    try:
        owner = os.stat(real)
    except OSError:
        owner = None
    mode = stat.S_IMODE(owner.st_mode) & 0o666 if owner else 0o600
    try:  # made here: the database's permissions and, as SQLite does for -wal, owner
        descriptor = os.open(name(real), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        pass
    except OSError:
        return None
    else:
        try:
            os.fchmod(descriptor, mode)
            if owner and os.geteuid() == 0:
                os.fchown(descriptor, owner.st_uid, owner.st_gid)
        except OSError:
            pass
        return descriptor
    for flags in (os.O_RDWR, os.O_RDONLY):  # flock needs no write access
        try:
            return os.open(name(real), flags | os.O_CLOEXEC)
        except OSError:
            continue
    return None


def _close(descriptor: int | None) -> None:
    if descriptor is not None:
        os.close(descriptor)


_ISOLATION: Any = sqlite3.Connection.__dict__["isolation_level"]  # the C attribute


class WriterLockedConnection(sqlite3.Connection):
    """A sqlite3 connection that takes the database's write lock file around its writes
    (pass as `factory=` to sqlite3.connect, for a database file)."""

    def __init__(self, database: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        # sqlite3.connect's `timeout`: how long a writer waits for the lock (5 s default)
        self._patience = float(kwargs.get("timeout", args[0] if args else 5.0))
        self._lock = open_lock_file(os.fsdecode(database))
        # A connection dropped without close() still closes the file, which frees the lock.
        self._closer = weakref.finalize(self, _close, self._lock)
        self._holding = False
        self._pause: Callable[[float], None] = time.sleep

    @property
    def holds_write_lock(self) -> bool:
        return self._holding

    # -- where statements come in ---------------------------------------------------

    def cursor(self, factory: Any = None) -> Any:
        return super().cursor(factory or WriterLockedCursor)

    # sqlite3's own shortcuts make a plain cursor in C: through ours instead.
    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        cursor: sqlite3.Cursor = self.cursor()
        return cursor.execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        cursor: sqlite3.Cursor = self.cursor()
        return cursor.executemany(sql, parameters)

    def executescript(self, script: str, /) -> sqlite3.Cursor:
        # A script may write anywhere in it: the lock for the whole of it.
        self._take(force=True)
        try:
            return super().executescript(script)
        finally:
            self.after()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.after()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.after()

    def __exit__(self, *exc: Any) -> Any:  # sqlite3 commits/rolls back in C, not via ours
        try:
            return super().__exit__(*exc)
        finally:
            self.after()

    @property  # type: ignore[override]
    def isolation_level(self) -> str | None:
        level: str | None = _ISOLATION.__get__(self)
        return level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        try:  # None commits an open transaction, in C
            _ISOLATION.__set__(self, value)
        finally:
            self.after()

    def close(self) -> None:
        super().close()  # raises (e.g. another thread): the connection and its lock stay
        if self._holding and self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)  # a forked child may share the file
        self._holding = False
        self._closer()

    # -- the lock -------------------------------------------------------------------

    def before(self, sql: str) -> bool:
        """Before `sql` runs: take the lock if it may begin a write transaction. False when
        it waited its whole timeout: SQLite is then asked without waiting again."""
        self.after()  # a transaction that ended out of our sight
        if not self._holding and not self.in_transaction and _begins_a_write(sql):
            return self._take()
        return True

    def _take(self, *, force: bool = False) -> bool:
        if self._lock is None or self._holding or (self.in_transaction and not force):
            return True
        pause = _FIRST_TRY
        deadline = time.monotonic() + self._patience
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False  # SQLite's own lock decides from here, without waiting
                self._pause(pause)
                pause = min(pause * 2, _LAST_TRY)
                continue
            self._holding = True
            return True

    def run(self, sql: str, statement: Callable[[], Any]) -> Any:
        """`statement` with the lock around it; after a whole timeout spent on the lock,
        SQLite's busy timeout is 0 for it (the wait is the timeout, not twice it)."""
        waited_out = not self.before(sql)
        if waited_out:
            (busy_ms,) = super().execute("PRAGMA busy_timeout").fetchone()
            super().execute("PRAGMA busy_timeout = 0")
        try:
            return statement()
        finally:
            if waited_out:
                super().execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
            self.after()

    def after(self) -> None:
        """After a statement, commit or rollback: let the lock go unless a transaction is
        still open (a write in autocommit mode, or one that failed before beginning)."""
        if self._holding and not self.in_transaction and self._lock is not None:
            self._holding = False
            fcntl.flock(self._lock, fcntl.LOCK_UN)


class WriterLockedCursor(sqlite3.Cursor):
    """The cursor of a WriterLockedConnection: each statement takes the lock first if it
    may begin a write, and lets it go after if no transaction was left open."""

    connection: WriterLockedConnection

    def execute(self, sql: str, parameters: Any = (), /) -> WriterLockedCursor:
        run = super().execute
        self.connection.run(sql, lambda: run(sql, parameters))
        return self

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> WriterLockedCursor:
        run = super().executemany
        self.connection.run(sql, lambda: run(sql, parameters))
        return self

    def executescript(self, script: str, /) -> WriterLockedCursor:
        self.connection._take(force=True)
        try:
            super().executescript(script)
            return self
        finally:
            self.connection.after()
