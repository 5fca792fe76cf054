"""At most one suppression in force per address, list and reason.

Two one-click POSTs for the same person arriving together (mail clients retry) must not
record two unsubscribes; the check-then-insert in the store is not atomic on its own.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ACTIVE = sa.text("lifted_at IS NULL")


def upgrade() -> None:
    # A store that already recorded the same suppression twice keeps the first in force
    # and marks the copies lifted at once (they stay as history), so the index can exist.
    op.execute(
        """
        UPDATE suppressions SET lifted_at = created_at
        WHERE lifted_at IS NULL AND id NOT IN (
            SELECT min(id) FROM suppressions WHERE lifted_at IS NULL
            GROUP BY email_key, coalesce(list_id, 0), reason
        )
        """
    )
    op.create_index(
        "uq_suppressions_active",
        "suppressions",
        ["email_key", sa.text("coalesce(list_id, 0)"), "reason"],
        unique=True,
        postgresql_where=ACTIVE,
        sqlite_where=ACTIVE,
    )


def downgrade() -> None:
    op.drop_index("uq_suppressions_active", table_name="suppressions")
