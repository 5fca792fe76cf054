"""Helpers for the web tests: everything the store holds, to prove a request changed nothing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from mailer.store import Store
from mailer.store.schema import metadata


def store_snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order: equal snapshots, nothing changed."""
    with store.engine.connect() as connection:
        return {
            table.name: [
                tuple(row)
                for row in connection.execute(select(table).order_by(*table.primary_key.columns))
            ]
            for table in metadata.sorted_tables
        }
