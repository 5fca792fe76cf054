"""Whether a campaign mails again those who already had its event's invitation.

`campaigns.mail_again`: 1 when the organiser asked for it (`--new`, the dashboard's "send
again"). Otherwise a new invitation leaves out the list's members who already had this
event's invitation through another campaign (another list, say): they are in the ledger
as skipped, with the campaign that reached them. Before, an event sent to two lists
reached everyone on both twice.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("mail_again", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("mail_again")
