"""The organiser's dashboard (issue 13): its users, their sessions, the sign-in throttle,
and the figures a finished campaign's report is drawn from.

`admin_users`: a name, a role (organiser or viewer) and an Argon2id hash. `admin_sessions`:
one row per signed-in browser, keyed by a SHA-256 of the cookie's secret (a copied
database holds no usable session), with the session's CSRF token, its last use (idle
timeout) and its absolute end; deleting the row signs the browser out at once.
`admin_login_failures`: failed sign-ins per account and per client address, and the end
of a lockout. `campaign_reports`: a finished campaign's report (outcomes, per domain,
over time) computed once and kept with the fingerprint it was computed under, so a
1,000,000-row campaign is not scanned at every page view.

The indexes: list member counts by status (the overview), and unsubscribes per campaign
(the report; the old query scanned every suppression).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "admin_users",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("name", name="uq_admin_users_name"),
    )
    op.create_table(
        "admin_sessions",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column(
            "user_id",
            _ID,
            sa.ForeignKey(
                "admin_users.id",
                ondelete="CASCADE",
                name="fk_admin_sessions_user_id_admin_users",
            ),
            nullable=False,
        ),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_admin_sessions_user_id", "admin_sessions", ["user_id"])
    op.create_table(
        "admin_login_failures",
        sa.Column("key", sa.String(400), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("first_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "campaign_reports",
        sa.Column(
            "campaign_id",
            _ID,
            sa.ForeignKey(
                "campaigns.id",
                ondelete="CASCADE",
                name="fk_campaign_reports_campaign_id_campaigns",
            ),
            primary_key=True,
        ),
        sa.Column("fingerprint", sa.String(200), nullable=False),
        sa.Column("built_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_memberships_list_status", "memberships", ["list_id", "status"])
    op.create_index("ix_suppressions_campaign_id", "suppressions", ["campaign_id"])


def downgrade() -> None:
    op.drop_index("ix_suppressions_campaign_id", table_name="suppressions")
    op.drop_index("ix_memberships_list_status", table_name="memberships")
    op.drop_table("campaign_reports")
    op.drop_table("admin_login_failures")
    op.drop_index("ix_admin_sessions_user_id", table_name="admin_sessions")
    op.drop_table("admin_sessions")
    op.drop_table("admin_users")
