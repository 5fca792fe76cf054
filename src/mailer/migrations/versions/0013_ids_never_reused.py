"""On SQLite, an erased person's ids never come back: subscribers and deliveries get AUTOINCREMENT.

SQLite's INTEGER PRIMARY KEY without AUTOINCREMENT hands out max(id) + 1: erase the
subscriber with the highest id (`mailer subscribers remove ADDRESS` deletes the row, and
the cascade takes their deliveries) and the next person added gets the same id, the next
ledger row the same delivery id. Links already mailed name those ids (unsubscribe and RSVP
tokens: the subscriber; VERP bounce addresses: the delivery), so the erased person's old
mail would unsubscribe, answer for, or bounce the new one. AUTOINCREMENT never hands out an
id twice (sqlite_sequence keeps the highest ever given).

Other tables named in links keep their rows: lists are soft-deleted (`deleted_at`) and
campaigns are never deleted, so their ids cannot come back. PostgreSQL's sequences never
reuse a value: nothing to do there.

Each table is rebuilt as SQLite's ALTER TABLE documentation says (lang_altertable.html,
"other kinds of table schema changes"): create the new table, copy, drop the old, rename.
Dropping `subscribers` with foreign keys enforced would delete, through ON DELETE CASCADE,
every membership, delivery and RSVP; store.database.upgrade() therefore runs migrations on
SQLite with foreign keys OFF and runs `PRAGMA foreign_key_check` before it commits. This
migration refuses to run with them ON.

sqlite_sequence is seeded with the highest id known ever given: the highest row left
(the copy does that) and, for deliveries, the highest delivery a bounce report named (its
row may since have gone with an erased person). An id erased before this upgrade while it
was the highest cannot be known any more, and may still be given once.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Connection, text

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# Each table, with the queries giving ids it may have handed out beyond its rows.
_TABLES: dict[str, tuple[str, ...]] = {
    "subscribers": (),
    "deliveries": ("SELECT MAX(delivery_id) FROM feedback_events",),
}


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "sqlite":
        return
    _refuse_with_foreign_keys_on(connection)
    for table, also_given in _TABLES.items():
        given = [f"SELECT MAX(id) FROM {table}", *also_given]  # noqa: S608 (our names)
        highest = max((connection.exec_driver_sql(q).scalar() or 0 for q in given), default=0)
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass
        _seed_sequence(connection, table, highest)


def _refuse_with_foreign_keys_on(connection: Connection) -> None:
    if connection.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            "migration 0013 rebuilds tables: with SQLite foreign keys ON, dropping the old "
            "table would delete every row that refers to it (ON DELETE CASCADE). Run it "
            "through mailer (store.database.upgrade), which turns them off for migrations."
        )


def _seed_sequence(connection: Connection, table: str, highest: int) -> None:
    """The next id handed out is above `highest` (the copy set it to the highest row)."""
    params = {"name": table, "seq": highest}
    updated = connection.execute(
        text("UPDATE sqlite_sequence SET seq = MAX(seq, :seq) WHERE name = :name"), params
    )
    if updated.rowcount == 0:
        connection.execute(
            text("INSERT INTO sqlite_sequence (name, seq) VALUES (:name, :seq)"), params
        )


def downgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "sqlite":
        return
    _refuse_with_foreign_keys_on(connection)
    for table in reversed(_TABLES):
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": False}
        ):
            pass
