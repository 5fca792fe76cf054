"""Lists get a public title and description (what recipients read), and can be deleted
without losing their unsubscribes: `deleted_at` marks a deleted list, whose row stays.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("lists") as batch:
        batch.add_column(sa.Column("title", sa.String(200)))
        batch.add_column(sa.Column("description", sa.Text))
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+), not a batch copy: re-creating
    # `lists` would drop the old table, and with foreign keys on, that deletes what hangs
    # from it (memberships, campaigns, suppressions).
    for column in ("deleted_at", "description", "title"):
        op.drop_column("lists", column)
