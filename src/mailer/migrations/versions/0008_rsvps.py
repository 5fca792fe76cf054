"""RSVP (issue 14): guests' answers per (event, subscriber), a row per event to serialise
capacity decisions on, and what a campaign sends (invitation, reminder, update) to whom.

`rsvps` holds one answer per (event slug, subscriber): the event slug is the event file's
name, the same identity the calendar invite's UID and SEQUENCE use, so an invitation sent
to two lists (or twice) shares one answer per person. `rsvp_events` exists to be locked
(SELECT ... FOR UPDATE on PostgreSQL) while places are counted and given out.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "rsvp_events",
        sa.Column("event_slug", sa.String(200), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "rsvps",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("event_slug", sa.String(200), nullable=False),
        sa.Column(
            "subscriber_id",
            _ID,
            sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("campaign_id", sa.BigInteger),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("guests", sa.Integer, nullable=False, server_default="0"),
        sa.Column("note", sa.Text),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("waiting_since", sa.DateTime(timezone=True)),
        sa.Column("promoted_at", sa.DateTime(timezone=True)),
        sa.Column("notified_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("event_slug", "subscriber_id", name="uq_rsvps_event_subscriber"),
    )
    op.create_index("ix_rsvps_subscriber", "rsvps", ["subscriber_id"])
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(
            sa.Column("message", sa.String(20), nullable=False, server_default="invitation")
        )
        batch.add_column(sa.Column("audience_filter", sa.String(100)))


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("audience_filter")
        batch.drop_column("message")
    op.drop_index("ix_rsvps_subscriber", table_name="rsvps")
    op.drop_table("rsvps")
    op.drop_table("rsvp_events")
