"""One campaign, many senders, one rate (issue 15, scale out).

`send_batches`: a sender's claim on some of a campaign's ledger rows, with its own lease.
A row in a batch carries `deliveries.batch_id`; only the batch's owner may mark it
`sending` or write its outcome, and a batch whose lease expired (or whose owner is a dead
process of the same machine) is taken over, with its rows settled, in one transaction.

`rate_budgets`: a shared token bucket per budget (the global rate, or one relay's), as
GCRA state: `tat` is the theoretical time (epoch seconds) of the next free slot.
`rate_counts`: slots granted per budget and minute, for the hourly and daily caps.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "send_batches",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column(
            "campaign_id",
            _ID,
            sa.ForeignKey("campaigns.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_send_batches_campaign_owner", "send_batches", ["campaign_id", "owner"])
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("batch_id", _ID))
    op.create_index("ix_deliveries_batch_id", "deliveries", ["batch_id"])
    op.create_table(
        "rate_budgets",
        sa.Column("name", sa.String(120), primary_key=True),
        sa.Column("tat", sa.Float(precision=53), nullable=False),
    )
    op.create_table(
        "rate_counts",
        sa.Column("budget", sa.String(120), primary_key=True),
        sa.Column("minute", sa.BigInteger(), primary_key=True),
        sa.Column("granted", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_counts")
    op.drop_table("rate_budgets")
    op.drop_index("ix_deliveries_batch_id", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("batch_id")
    op.drop_index("ix_send_batches_campaign_owner", table_name="send_batches")
    op.drop_table("send_batches")
