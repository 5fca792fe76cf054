"""Helpers for the web tests: everything the store holds, to prove a request changed nothing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from mailer.store import Store
from mailer.store.schema import metadata


def store_snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order: equal snapshots, nothing changed.

    Read through the driver, as stored (a route walk takes two snapshots a request, and
    SQLAlchemy's statement and row handling was most of its time). On PostgreSQL in one
    statement, each row as its text form (`row::text`, every column as PostgreSQL prints
    it): a statement a table made test_web_routes.py's walk wait 27 s for round trips."""
    if store.engine.dialect.name == "postgresql":
        return _postgres_snapshot(store)
    connection = store.engine.raw_connection()
    try:
        cursor = connection.cursor()
        snapshot = {}
        for each in metadata.sorted_tables:
            order = ", ".join(f'"{c.name}"' for c in each.primary_key.columns)
            cursor.execute(f'SELECT * FROM "{each.name}" ORDER BY {order}')  # noqa: S608 (ours)
            snapshot[each.name] = [tuple(row) for row in cursor.fetchall()]
        cursor.close()
        connection.rollback()
        return snapshot
    finally:
        connection.close()


def _postgres_snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    tables = metadata.sorted_tables
    parts = []
    for each in tables:
        order = ", ".join(f'r."{c.name}"' for c in each.primary_key.columns)
        aggregate = f"array_agg(r::text ORDER BY {order})"
        parts.append(f'(SELECT {aggregate} FROM "{each.name}" AS r)')  # noqa: S608 (our names)
    with store.engine.connect() as connection:
        found = connection.execute(text("SELECT " + ", ".join(parts))).one()
    return {each.name: [(row,) for row in found[i] or []] for i, each in enumerate(tables)}
