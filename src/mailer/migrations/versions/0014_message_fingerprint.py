"""What a campaign's messages are made from, as its coordinator built them (issue 15).

`campaigns.message_fingerprint`: a digest of the event (as loaded), its layout's files and
the settings that go into every message (sender, base URL, bounce address), recorded by the
sender that holds the campaign when its run starts. Another sender (a helper process, or a
`mailer worker` on another machine) builds the same digest from its own file and settings
and sends nothing unless they agree: an event file edited after the confirmation, or a
machine with other settings, would otherwise mail part of the list a different message.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("message_fingerprint", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("message_fingerprint")
