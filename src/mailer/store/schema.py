"""The tables, as SQLAlchemy Core metadata. Migrations (mailer/migrations) create them.

Times are stored as timezone-aware UTC. `email_key` is the case-folded address used for
uniqueness; `email` is the normalised form that goes on the wire.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Predictable constraint names, so migrations can refer to them on every database.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments INTEGER PRIMARY KEY; BigInteger elsewhere.
Id = BigInteger().with_variant(Integer(), "sqlite")
UtcDateTime = DateTime(timezone=True)

lists = Table(
    "lists",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
    # What recipients read (the footer, the unsubscribe page, List-Id); NULL: the name.
    Column("title", String(200)),
    Column("description", Text),
    # A deleted list keeps its row, so its unsubscribes and its campaigns' history stay;
    # creating (or importing into) a list of the same name brings the row back, with them.
    Column("deleted_at", UtcDateTime),
)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False),
    Column("email_key", String(320), nullable=False, unique=True),
    Column("name", String(1000), nullable=False, default=""),
    Column("attributes", JSON, nullable=False),
    Column("status", String(20), nullable=False),
    Column("smtputf8", Integer, nullable=False, default=0),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # Links already mailed name the id: on SQLite, an erased person's id must never be
    # handed out again (AUTOINCREMENT; migration 0013). PostgreSQL sequences never reuse.
    sqlite_autoincrement=True,
)

imports = Table(
    "imports",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("list_id", Id, ForeignKey("lists.id", ondelete="CASCADE"), nullable=False),
    Column("source", Text, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("counts", JSON),
)

memberships = Table(
    "memberships",
    metadata,
    Column("list_id", Id, ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "subscriber_id",
        Id,
        ForeignKey("subscribers.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("status", String(20), nullable=False),
    # Which import last touched the row: a second row for the same person in one file
    # is recognised as a duplicate without holding every address of the file in memory.
    Column("last_import_id", Id, ForeignKey("imports.id", ondelete="SET NULL")),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_memberships_subscriber", "subscriber_id"),
)

suppressions = Table(
    "suppressions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("email_key", String(320), nullable=False),
    # NULL: suppressed from every list (bounce, complaint, global unsubscribe).
    Column("list_id", Id, ForeignKey("lists.id", ondelete="CASCADE")),
    Column("reason", String(20), nullable=False),
    Column("source", String(20), nullable=False),
    Column("campaign_id", BigInteger),
    Column("detail", Text),
    Column("created_at", UtcDateTime, nullable=False),
    # Set when the recipient themselves resubscribes; the row stays as the audit trail.
    Column("lifted_at", UtcDateTime),
    Index("ix_suppressions_email_key", "email_key"),
)

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event_path", Text, nullable=False),
    Column("event_slug", String(200), nullable=False),
    Column("list_id", Id, ForeignKey("lists.id", ondelete="CASCADE"), nullable=False),
    Column("subject", Text, nullable=False),
    Column("status", String(20), nullable=False),
    Column("scheduled_at", UtcDateTime),
    Column("snapshot_at", UtcDateTime),
    Column("started_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # The worker holding the campaign, until the lease expires without a heartbeat.
    Column("lease_owner", String(200)),
    Column("lease_expires_at", UtcDateTime),
    Column("last_error", Text),
    # Paused by the relay (breaker, unreachable): a worker takes it again at `retry_at`,
    # the cool-down doubling with each such pause in a row. NULL when a person paused it.
    Column("retry_at", UtcDateTime),
    Column("relay_pauses", Integer, nullable=False, server_default="0"),
    # What time and place the invite was sent for (calendar.schedule_key): SEQUENCE.
    Column("schedule_key", String(32)),
    # Issue 14: what the campaign sends (models.MessageKind) and to which answers
    # (a comma list of models.AudienceFilter values; NULL: the whole list).
    Column("message", String(20), nullable=False, server_default="invitation"),
    Column("audience_filter", String(100)),
    # Issue 15: what its messages are made from, as the coordinator built them
    # (sending.run.message_fingerprint); another sender sends nothing unless it agrees.
    Column("message_fingerprint", String(64)),
    # 1: to everyone on the list (--new); 0: not to those who already had this event's
    # invitation through another campaign (they are skipped at the snapshot).
    Column("mail_again", Integer, nullable=False, server_default="0"),
    # The event's title and start, hashed (Event.identity): a copy of the event file under
    # another name is the same event. NULL for campaigns made before 0017.
    Column("event_key", String(64)),
    Index("ix_campaigns_status", "status"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("campaign_id", Id, ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
    Column("subscriber_id", Id, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
    Column("email", String(320), nullable=False),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime),
    Column("last_code", Integer),
    Column("last_reply", Text),
    Column("message_id", String(400)),
    Column("sent_at", UtcDateTime),
    Column("updated_at", UtcDateTime, nullable=False),
    # What came back after the relay accepted it (models.LaterOutcome: a bounce mailed
    # back, a complaint); `status` stays `sent`. NULL: nothing came back.
    Column("feedback", String(20)),
    Column("feedback_at", UtcDateTime),
    # The MAILER_RELAYS relay that gave the row its last outcome (issue 15); NULL with the
    # single-relay settings.
    Column("relay", String(100)),
    # The sender's batch holding the row while it is claimed (issue 15); NULL otherwise.
    Column("batch_id", Id),
    UniqueConstraint("campaign_id", "subscriber_id", name="uq_deliveries_campaign_subscriber"),
    Index("ix_deliveries_campaign_status", "campaign_id", "status", "id"),
    Index("ix_deliveries_batch_id", "batch_id"),
    # A VERP bounce address names the row: never reused on SQLite (migration 0013).
    sqlite_autoincrement=True,
)

# The rows a sender may claim (store/batches.py: held by nobody, due or to be resent), in
# id order, for each campaign. Partial, so a claim reads only what is left: claiming
# through the primary key read every row already sent first, O(campaign) a claim (57 ms at
# 50,000 of 100,000 sent on PostgreSQL, against 0.8 ms through this index). Rows enter it
# when the audience is taken or a row is given back, and leave it when claimed.
CLAIMABLE_STATUSES = ("queued", "deferred", "unknown")
Index(
    "ix_deliveries_claimable",
    deliveries.c.campaign_id,
    deliveries.c.id,
    postgresql_where=deliveries.c.batch_id.is_(None) & deliveries.c.status.in_(CLAIMABLE_STATUSES),
    sqlite_where=deliveries.c.batch_id.is_(None) & deliveries.c.status.in_(CLAIMABLE_STATUSES),
)

# A sender's claim on some of a campaign's rows, with its own lease (issue 15): only the
# owner may mark its rows `sending` or record them (see store/batches.py).
send_batches = Table(
    "send_batches",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("campaign_id", Id, ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
    Column("owner", String(200), nullable=False),
    Column("lease_expires_at", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_send_batches_campaign_owner", "campaign_id", "owner"),
)

# The shared rate (issue 15): GCRA state per budget (`tat`, epoch seconds) and the slots
# granted per minute, which the hourly and daily caps add up (see store/rate_budget.py).
rate_budgets = Table(
    "rate_budgets",
    metadata,
    Column("name", String(120), primary_key=True),
    Column("tat", Float(precision=53), nullable=False),
)
rate_counts = Table(
    "rate_counts",
    metadata,
    Column("budget", String(120), primary_key=True),
    Column("minute", BigInteger, primary_key=True),
    Column("granted", Integer, nullable=False),
)

# -- RSVP (issue 14) ---------------------------------------------------------------------

# One row per event that has answers: locked (FOR UPDATE on PostgreSQL) while its places
# are counted and given out, so concurrent "yes" answers never over-fill it.
rsvp_events = Table(
    "rsvp_events",
    metadata,
    Column("event_slug", String(200), primary_key=True),
    Column("created_at", UtcDateTime, nullable=False),
)

# One answer per (event, subscriber); the event is its file's slug, as for the invite's UID.
rsvps = Table(
    "rsvps",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event_slug", String(200), nullable=False),
    Column("subscriber_id", Id, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
    Column("campaign_id", BigInteger),  # whose link answered last (for the record)
    Column("status", String(20), nullable=False),  # models.RsvpStatus
    Column("guests", Integer, nullable=False, server_default="0"),
    Column("note", Text),
    Column("answered_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("waiting_since", UtcDateTime),  # the waiting list's order
    Column("promoted_at", UtcDateTime),  # moved up from the waiting list
    Column("notified_at", UtcDateTime),  # ... and told so by mail
    UniqueConstraint("event_slug", "subscriber_id", name="uq_rsvps_event_subscriber"),
    Index("ix_rsvps_subscriber", "subscriber_id"),
)

# -- bounces, complaints, mailed unsubscribes (issue 12) ---------------------------------

# One row per message read from the bounce mailbox (or webhook notification), by a digest
# of its bytes, written with its outcome: a message is deleted or moved only once this row
# is committed, so reading it again after a crash changes nothing.
feedback_messages = Table(
    "feedback_messages",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("message_key", String(80), nullable=False, unique=True),
    Column("kind", String(20), nullable=False),  # models.FeedbackKind
    Column("disposition", String(20), nullable=False),  # models.Disposition
    Column("source", String(20), nullable=False),
    Column("note", Text),
    Column("received_at", UtcDateTime, nullable=False),
)

# One row per recipient a report was about, with what the policy did (models.FeedbackAction).
feedback_events = Table(
    "feedback_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("message_key", String(80)),
    Column("kind", String(20), nullable=False),
    Column("action", String(20), nullable=False),
    Column("email_key", String(320), nullable=False),
    Column("email", String(320), nullable=False),
    Column("campaign_id", BigInteger),
    Column("delivery_id", BigInteger),
    Column("status", String(20)),
    Column("diagnostic", Text),
    Column("source", String(20), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_feedback_events_email_key", "email_key", "kind"),
    Index("ix_feedback_events_campaign", "campaign_id"),
)
