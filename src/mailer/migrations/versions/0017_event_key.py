"""Which event a campaign is of, by what the event is rather than its file's name.

`campaigns.event_key`: the event's title and start, hashed (Event.identity). An
invitation leaves out whoever had the same event's invitation through another campaign;
"the same event" was the same file name, so a copy of the file sent to a second list
reached the people on both lists twice. NULL for campaigns made before: they are matched
by file name only, as before.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("event_key", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("event_key")
