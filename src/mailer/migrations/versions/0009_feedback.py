"""Bounces, complaints and mailed unsubscribes (issue 12).

`feedback_messages`: one row per message read from the bounce mailbox (or webhook call),
keyed by a digest of its bytes, written in the same transaction as its outcome; a message
is deleted or moved only after that commit, so a crash in between finds the key on the
next run and counts nothing twice. `feedback_events`: one row per recipient a report was
about (bounce, complaint, mailed unsubscribe), for `mailer bounces list`, the soft-bounce
window and the campaign's rates. `deliveries.feedback`: the outcome a row gained after the
relay accepted it (bounced, soft-bounced, complained); its `status` stays `sent`.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "feedback_messages",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("message_key", sa.String(80), nullable=False, unique=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("disposition", sa.String(20), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "feedback_events",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("message_key", sa.String(80)),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("email_key", sa.String(320), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("campaign_id", sa.BigInteger),
        sa.Column("delivery_id", sa.BigInteger),
        sa.Column("status", sa.String(20)),
        sa.Column("diagnostic", sa.Text),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_feedback_events_email_key", "feedback_events", ["email_key", "kind"])
    op.create_index("ix_feedback_events_campaign", "feedback_events", ["campaign_id"])
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("feedback", sa.String(20)))
        batch.add_column(sa.Column("feedback_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("feedback_at")
        batch.drop_column("feedback")
    op.drop_index("ix_feedback_events_campaign", table_name="feedback_events")
    op.drop_index("ix_feedback_events_email_key", table_name="feedback_events")
    op.drop_table("feedback_events")
    op.drop_table("feedback_messages")
