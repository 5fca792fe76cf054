"""Campaigns and the per-recipient delivery ledger.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Utc = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("event_path", sa.Text, nullable=False),
        sa.Column("event_slug", sa.String(200), nullable=False),
        sa.Column(
            "list_id",
            Id,
            sa.ForeignKey("lists.id", ondelete="CASCADE", name="fk_campaigns_list_id_lists"),
            nullable=False,
        ),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("scheduled_at", Utc),
        sa.Column("snapshot_at", Utc),
        sa.Column("started_at", Utc),
        sa.Column("finished_at", Utc),
        sa.Column("created_at", Utc, nullable=False),
        sa.Column("updated_at", Utc, nullable=False),
        sa.Column("lease_owner", sa.String(200)),
        sa.Column("lease_expires_at", Utc),
        sa.Column("last_error", sa.Text),
    )
    op.create_index("ix_campaigns_status", "campaigns", ["status"])
    op.create_table(
        "deliveries",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column(
            "campaign_id",
            Id,
            sa.ForeignKey(
                "campaigns.id", ondelete="CASCADE", name="fk_deliveries_campaign_id_campaigns"
            ),
            nullable=False,
        ),
        sa.Column(
            "subscriber_id",
            Id,
            sa.ForeignKey(
                "subscribers.id",
                ondelete="CASCADE",
                name="fk_deliveries_subscriber_id_subscribers",
            ),
            nullable=False,
        ),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", Utc),
        sa.Column("last_code", sa.Integer),
        sa.Column("last_reply", sa.Text),
        sa.Column("message_id", sa.String(400)),
        sa.Column("sent_at", Utc),
        sa.Column("updated_at", Utc, nullable=False),
        sa.UniqueConstraint(
            "campaign_id", "subscriber_id", name="uq_deliveries_campaign_subscriber"
        ),
    )
    op.create_index("ix_deliveries_campaign_status", "deliveries", ["campaign_id", "status", "id"])


def downgrade() -> None:
    op.drop_table("deliveries")
    op.drop_table("campaigns")
