"""Campaigns paused by the relay (breaker, unreachable) are retried by a worker after a
cool-down: when (`retry_at`) and how many such pauses in a row (`relay_pauses`).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("retry_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("relay_pauses", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("relay_pauses")
        batch.drop_column("retry_at")
