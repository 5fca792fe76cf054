"""The dashboard's users, their sessions and the sign-in throttle (migration 0010).

The tables sit beside their queries, as signing_keys does: nothing else reads them.
A session row is keyed by the SHA-256 of the cookie's secret, never the secret itself, so
a copy of the database signs nobody in; deleting a user deletes their sessions in the
same transaction, which is what makes `mailer users remove` end them at once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from mailer.clock import as_utc
from mailer.errors import InputError, NotFoundError
from mailer.store.base import StoreBase
from mailer.store.schema import Id, UtcDateTime, metadata

admin_users = Table(
    "admin_users",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("role", String(20), nullable=False),
    Column("password_hash", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

admin_sessions = Table(
    "admin_sessions",
    metadata,
    Column("key", String(64), primary_key=True),
    Column(
        "user_id",
        Id,
        ForeignKey("admin_users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)

admin_login_failures = Table(
    "admin_login_failures",
    metadata,
    Column("key", String(400), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("first_failed_at", UtcDateTime, nullable=False),
    Column("locked_until", UtcDateTime),
)


class AdminRole(enum.StrEnum):
    """`organiser`: everything; `viewer`: reads the overview and reports, changes nothing."""

    ORGANISER = "organiser"
    VIEWER = "viewer"

    def may(self, needed: AdminRole) -> bool:
        """Whether this role may do what `needed` may (an organiser may all a viewer may)."""
        return self is AdminRole.ORGANISER or needed is AdminRole.VIEWER


@dataclass(frozen=True, slots=True)
class AdminUser:
    id: int
    name: str
    role: AdminRole
    password_hash: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AdminSession:
    key: str
    """SHA-256 (hex) of the cookie's secret."""
    user: AdminUser
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class LoginFailures:
    failures: int
    first_failed_at: datetime
    locked_until: datetime | None


def _user(row: object) -> AdminUser:
    return AdminUser(
        id=int(row.id),  # type: ignore[attr-defined]
        name=str(row.name),  # type: ignore[attr-defined]
        role=AdminRole(row.role),  # type: ignore[attr-defined]
        password_hash=str(row.password_hash),  # type: ignore[attr-defined]
        created_at=as_utc(row.created_at) or row.created_at,  # type: ignore[attr-defined]
    )


class AdminQueries(StoreBase):
    # -- users --------------------------------------------------------------------------

    def add_admin_user(
        self, name: str, *, role: AdminRole, password_hash: str, now: datetime
    ) -> AdminUser:
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    insert(admin_users).values(
                        name=name,
                        role=role.value,
                        password_hash=password_hash,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError as exc:
            raise InputError(
                f"a user named {name!r} already exists",
                hint="`mailer users reset-password NAME` changes their password.",
            ) from exc
        return self.admin_user(name)

    def admin_user(self, name: str) -> AdminUser:
        with self._reading() as connection:
            row = connection.execute(select(admin_users).where(admin_users.c.name == name)).first()
        if row is None:
            raise NotFoundError(
                f"no dashboard user named {name!r}", hint="`mailer users list` shows them."
            )
        return _user(row)

    def find_admin_user(self, name: str) -> AdminUser | None:
        try:
            return self.admin_user(name)
        except NotFoundError:
            return None

    def admin_users(self) -> list[AdminUser]:
        with self._reading() as connection:
            rows = connection.execute(select(admin_users).order_by(admin_users.c.name)).all()
        return [_user(row) for row in rows]

    def remove_admin_user(self, name: str) -> int:
        """Delete the user and every session of theirs; how many sessions ended."""
        user = self.admin_user(name)
        with self.engine.begin() as connection:
            ended = connection.execute(
                delete(admin_sessions).where(admin_sessions.c.user_id == user.id)
            ).rowcount
            connection.execute(delete(admin_users).where(admin_users.c.id == user.id))
        return int(ended)

    def set_admin_password(self, name: str, *, password_hash: str, now: datetime) -> int:
        """New password; every session of the user ends (whoever knew the old one is out).
        How many sessions ended."""
        user = self.admin_user(name)
        with self.engine.begin() as connection:
            connection.execute(
                update(admin_users)
                .where(admin_users.c.id == user.id)
                .values(password_hash=password_hash, updated_at=now)
            )
            ended = connection.execute(
                delete(admin_sessions).where(admin_sessions.c.user_id == user.id)
            ).rowcount
        return int(ended)

    def rehash_admin_password(self, user_id: int, *, password_hash: str, now: datetime) -> None:
        """The same password under newer hashing parameters; sessions stay."""
        with self.engine.begin() as connection:
            connection.execute(
                update(admin_users)
                .where(admin_users.c.id == user_id)
                .values(password_hash=password_hash, updated_at=now)
            )

    # -- sessions -----------------------------------------------------------------------

    def add_admin_session(
        self,
        *,
        key: str,
        user_id: int,
        csrf_token: str,
        now: datetime,
        expires_at: datetime,
    ) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                insert(admin_sessions).values(
                    key=key,
                    user_id=user_id,
                    csrf_token=csrf_token,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=expires_at,
                )
            )

    def admin_session(self, key: str) -> AdminSession | None:
        query = (
            select(admin_sessions, admin_users)
            .join(admin_users, admin_users.c.id == admin_sessions.c.user_id)
            .where(admin_sessions.c.key == key)
        )
        with self._reading() as connection:
            row = connection.execute(query).first()
        if row is None:
            return None
        return AdminSession(
            key=row.key,
            user=_user(row),
            csrf_token=row.csrf_token,
            created_at=as_utc(row.created_at) or row.created_at,
            last_seen_at=as_utc(row.last_seen_at) or row.last_seen_at,
            expires_at=as_utc(row.expires_at) or row.expires_at,
        )

    def touch_admin_session(self, key: str, *, now: datetime) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(admin_sessions).where(admin_sessions.c.key == key).values(last_seen_at=now)
            )

    def end_admin_session(self, key: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(delete(admin_sessions).where(admin_sessions.c.key == key))

    def end_stale_admin_sessions(self, *, idle_before: datetime, now: datetime) -> int:
        """Forget sessions past their absolute end or idle since `idle_before`."""
        with self.engine.begin() as connection:
            gone = connection.execute(
                delete(admin_sessions).where(
                    (admin_sessions.c.expires_at <= now)
                    | (admin_sessions.c.last_seen_at < idle_before)
                )
            ).rowcount
        return int(gone)

    # -- sign-in throttle ---------------------------------------------------------------

    def login_failures(self, key: str) -> LoginFailures | None:
        with self._reading() as connection:
            row = connection.execute(
                select(admin_login_failures).where(admin_login_failures.c.key == key)
            ).first()
        if row is None:
            return None
        return LoginFailures(
            failures=int(row.failures),
            first_failed_at=as_utc(row.first_failed_at) or row.first_failed_at,
            locked_until=as_utc(row.locked_until),
        )

    def count_login_attempt(
        self, key: str, *, now: datetime, window_start: datetime
    ) -> LoginFailures:
        """Count one sign-in attempt under `key` BEFORE its password is checked; while the
        key is locked nothing is counted and the lock is returned. A count begun before
        `window_start`, or whose lock has run out, starts again at 1.

        Counted first, in one transaction holding the key's row: concurrent attempts each
        get their own number, so a guesser sending many at once gets no more password
        checks than the limit allows (a check-then-count let every attempt that started
        before the lock through). The row is made with INSERT ... ON CONFLICT DO NOTHING:
        two first attempts at once both count, neither fails on the key."""
        with self.engine.begin() as connection:
            connection.execute(
                _insert_if_missing(connection.dialect.name).values(
                    key=key, failures=0, first_failed_at=now, locked_until=None
                )
            )
            row = connection.execute(
                select(admin_login_failures)
                .where(admin_login_failures.c.key == key)
                .with_for_update()
            ).one()
            locked = as_utc(row.locked_until)
            first = as_utc(row.first_failed_at) or now
            if locked is not None and locked > now:
                return LoginFailures(
                    failures=int(row.failures), first_failed_at=first, locked_until=locked
                )
            if first < window_start or locked is not None:
                failures, first = 1, now
            else:
                failures = int(row.failures) + 1
            connection.execute(
                update(admin_login_failures)
                .where(admin_login_failures.c.key == key)
                .values(failures=failures, first_failed_at=first, locked_until=None)
            )
        return LoginFailures(failures=failures, first_failed_at=first, locked_until=None)

    def lock_login(self, key: str, *, until: datetime) -> None:
        """Refuse every sign-in under `key` until `until`."""
        with self.engine.begin() as connection:
            connection.execute(
                update(admin_login_failures)
                .where(admin_login_failures.c.key == key)
                .values(locked_until=until)
            )

    def forgive_login_attempt(self, key: str) -> None:
        """Take back one counted attempt (it was a successful sign-in)."""
        with self.engine.begin() as connection:
            connection.execute(
                update(admin_login_failures)
                .where(admin_login_failures.c.key == key, admin_login_failures.c.failures > 0)
                .values(failures=admin_login_failures.c.failures - 1)
            )

    def clear_login_failures(self, key: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                delete(admin_login_failures).where(admin_login_failures.c.key == key)
            )


def _insert_if_missing(dialect: str) -> Any:
    """INSERT into admin_login_failures that does nothing when the key is there already."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(admin_login_failures).on_conflict_do_nothing()
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(admin_login_failures).on_conflict_do_nothing()
