"""Foundation: lists, subscribers, memberships, imports, suppressions.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Utc = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "lists",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", Utc, nullable=False),
        sa.UniqueConstraint("name", name="uq_lists_name"),
    )
    op.create_table(
        "subscribers",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("email_key", sa.String(320), nullable=False),
        sa.Column("name", sa.String(1000), nullable=False),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("smtputf8", sa.Integer, nullable=False),
        sa.Column("created_at", Utc, nullable=False),
        sa.Column("updated_at", Utc, nullable=False),
        sa.UniqueConstraint("email_key", name="uq_subscribers_email_key"),
    )
    op.create_table(
        "imports",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column(
            "list_id",
            Id,
            sa.ForeignKey("lists.id", ondelete="CASCADE", name="fk_imports_list_id_lists"),
            nullable=False,
        ),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("started_at", Utc, nullable=False),
        sa.Column("finished_at", Utc),
        sa.Column("counts", sa.JSON),
    )
    op.create_table(
        "memberships",
        sa.Column(
            "list_id",
            Id,
            sa.ForeignKey("lists.id", ondelete="CASCADE", name="fk_memberships_list_id_lists"),
            primary_key=True,
        ),
        sa.Column(
            "subscriber_id",
            Id,
            sa.ForeignKey(
                "subscribers.id",
                ondelete="CASCADE",
                name="fk_memberships_subscriber_id_subscribers",
            ),
            primary_key=True,
        ),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column(
            "last_import_id",
            Id,
            sa.ForeignKey(
                "imports.id", ondelete="SET NULL", name="fk_memberships_last_import_id_imports"
            ),
        ),
        sa.Column("created_at", Utc, nullable=False),
        sa.Column("updated_at", Utc, nullable=False),
    )
    op.create_index("ix_memberships_subscriber", "memberships", ["subscriber_id"])
    op.create_table(
        "suppressions",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("email_key", sa.String(320), nullable=False),
        sa.Column(
            "list_id",
            Id,
            sa.ForeignKey("lists.id", ondelete="CASCADE", name="fk_suppressions_list_id_lists"),
        ),
        sa.Column("reason", sa.String(20), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("campaign_id", sa.BigInteger),
        sa.Column("detail", sa.Text),
        sa.Column("created_at", Utc, nullable=False),
        sa.Column("lifted_at", Utc),
    )
    op.create_index("ix_suppressions_email_key", "suppressions", ["email_key"])


def downgrade() -> None:
    op.drop_table("suppressions")
    op.drop_table("memberships")
    op.drop_table("imports")
    op.drop_table("subscribers")
    op.drop_table("lists")
