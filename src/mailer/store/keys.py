"""The keys that have signed links (see mailer/store/keyring.py for why the store keeps them)."""

from __future__ import annotations

from sqlalchemy import Column, Engine, String, Table, Text, select
from sqlalchemy.sql.dml import Insert

from mailer.clock import as_utc
from mailer.errors import MailerError
from mailer.store.base import StoreBase
from mailer.store.keyring import KeyOrigin, SigningKey
from mailer.store.schema import UtcDateTime, metadata

# Created by migration 0004. Kept beside its queries: nothing else reads it.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("secret", Text, nullable=False),
    Column("origin", String(20), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)


class SigningKeyQueries(StoreBase):
    def signing_keys(self) -> list[SigningKey]:
        """Every key that has signed links, oldest first."""
        query = select(signing_keys).order_by(signing_keys.c.created_at, signing_keys.c.key_id)
        with self._reading() as connection:
            rows = connection.execute(query).all()
        return [
            SigningKey(
                key_id=row.key_id,
                secret=row.secret,
                origin=KeyOrigin(row.origin),
                created_at=as_utc(row.created_at) or row.created_at,
            )
            for row in rows
        ]

    def add_signing_key(self, key: SigningKey) -> None:
        """Record `key`; a key already recorded (by another process, say) stays as it was."""
        values = {
            "key_id": key.key_id,
            "secret": key.secret,
            "origin": key.origin.value,
            "created_at": key.created_at,
        }
        with self.engine.begin() as connection:
            statement: Insert
            if connection.dialect.name == "postgresql":
                from sqlalchemy.dialects import postgresql

                statement = postgresql.insert(signing_keys).values(values).on_conflict_do_nothing()
            else:
                from sqlalchemy.dialects import sqlite

                statement = sqlite.insert(signing_keys).values(values).on_conflict_do_nothing()
            connection.execute(statement)


def read_recorded_keys(database_url: str) -> list[SigningKey] | None:
    """The recorded keys, read without creating, migrating or writing anything; None if
    the store does not exist yet, lacks the table, or cannot be reached. For reports
    (`mailer config show`), which must not leave a database behind."""
    from pathlib import Path

    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from mailer.store.database import create_store_engine

    try:
        parsed = make_url(database_url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if not database or database == ":memory:" or not Path(database).is_file():
            return None
    try:
        engine = create_store_engine(database_url)
    except MailerError:
        return None
    try:
        if not inspect(engine).has_table(signing_keys.name):
            return None
        return _Reader(engine).signing_keys()
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()


class _Reader(SigningKeyQueries):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
