"""Which relay took each message (issue 15, several relays).

`deliveries.relay`: the name of the relay (MAILER_RELAYS) that gave the row its last
outcome; NULL with the single-relay settings, so a store that never used MAILER_RELAYS
reports exactly as before.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("relay", sa.String(100)))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("relay")
