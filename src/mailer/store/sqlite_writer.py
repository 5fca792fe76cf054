"""SQLite's one writer at a time, handed over promptly between threads and processes.

SQLite lets one connection write at a time; the others wait in its busy handler, which
sleeps 1, 2, 5, 10, 15, 20, 25 ... ms between tries and so wakes up to ten milliseconds or
more after the lock was let go. With several senders of one campaign on one machine
(`mailer send --processes N`), each claim (~20 ms), marking (~5 ms) and record made the
others sleep through part of the next one with their queues run dry: two processes sent
1.44-1.50x what one did, not 1.6x (bench/README, twelfth session).

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
shell). A writer that has waited the connection's whole timeout for the file lock goes on
to SQLite's lock, whose own timeout then says "database is locked" as before, so a lock
that is never let go (a thread holding a transaction open while it waits for another)
fails the way it did rather than hangs.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
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
)
_LONGEST = max(len(word) for word in _WRITES)
_FIRST_TRY = 0.00005
_LAST_TRY = 0.001


def lock_path(database: str) -> str:
    return f"{database}.write-lock"


def _begins_a_write(sql: str) -> bool:
    return sql.lstrip()[:_LONGEST].upper().startswith(_WRITES)


class WriterLockedConnection(sqlite3.Connection):
    """A sqlite3 connection that takes the database's write lock file around its writes
    (pass as `factory=` to sqlite3.connect, for a database file)."""

    def __init__(self, database: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        # sqlite3.connect's `timeout`: how long a writer waits for the lock (5 s default)
        self._patience = float(kwargs.get("timeout", args[0] if args else 5.0))
        self._lock = os.open(lock_path(database), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        # A connection dropped without close() still closes the file, which frees the lock.
        self._closer = weakref.finalize(self, os.close, self._lock)
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

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._holding = False
            self._closer()  # closing the file lets the lock go

    # -- the lock -------------------------------------------------------------------

    def before(self, sql: str) -> None:
        """Before `sql` runs: take the lock if it may begin a write transaction."""
        if not self._holding and not self.in_transaction and _begins_a_write(sql):
            self._take()

    def _take(self, *, force: bool = False) -> None:
        if self._holding or (self.in_transaction and not force):
            return
        pause = _FIRST_TRY
        deadline = time.monotonic() + self._patience
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return  # SQLite's own lock and timeout decide from here
                self._pause(pause)
                pause = min(pause * 2, _LAST_TRY)
                continue
            self._holding = True
            return

    def after(self) -> None:
        """After a statement, commit or rollback: let the lock go unless a transaction is
        still open (a write in autocommit mode, or one that failed before beginning)."""
        if self._holding and not self.in_transaction:
            self._holding = False
            fcntl.flock(self._lock, fcntl.LOCK_UN)


class WriterLockedCursor(sqlite3.Cursor):
    """The cursor of a WriterLockedConnection: each statement takes the lock first if it
    may begin a write, and lets it go after if no transaction was left open."""

    connection: WriterLockedConnection

    def execute(self, sql: str, parameters: Any = (), /) -> WriterLockedCursor:
        self.connection.before(sql)
        try:
            return super().execute(sql, parameters)
        finally:
            self.connection.after()

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> WriterLockedCursor:
        self.connection.before(sql)
        try:
            return super().executemany(sql, parameters)
        finally:
            self.connection.after()
