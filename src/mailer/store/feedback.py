"""Bounces, complaints and mailed unsubscribes as the store records them (issue 12).

Each message read from the bounce mailbox is recorded under a key (a digest of its bytes)
in the same transaction as everything it changed, so reading it again (after a crash
before it was moved, or by a second reader) changes nothing. A sent ledger row keeps
`sent` and gains `feedback` (models.LaterOutcome); suppressions go through the same
table and index as every other, so a complaint is never lifted by a resubscribe click.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, case, func, or_, select, update
from sqlalchemy.sql.dml import ReturningInsert

from mailer.clock import as_utc
from mailer.models import (
    DeliveryStatus,
    Disposition,
    FeedbackAction,
    FeedbackCounts,
    FeedbackEvent,
    FeedbackKind,
    FeedbackTarget,
    LaterOutcome,
    SuppressionReason,
    UnsubscribeSource,
)
from mailer.store.base import email_key
from mailer.store.schema import (
    campaigns,
    deliveries,
    feedback_events,
    feedback_messages,
    subscribers,
    suppressions,
)
from mailer.store.suppressions import SuppressionQueries

# A later outcome never replaces a graver one: a complaint stays a complaint.
_GRAVITY = {LaterOutcome.SOFT_BOUNCED: 1, LaterOutcome.BOUNCED: 2, LaterOutcome.COMPLAINED: 3}
_MAX_TEXT = 500
# Rows the relay took (sent), or refused during the transaction (bounced at once).
_REACHED = (DeliveryStatus.SENT.value, DeliveryStatus.BOUNCED.value, DeliveryStatus.UNKNOWN.value)


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """What one report (one mailbox message, one webhook notification) said, to record."""

    message_key: str | None
    """None: nothing to recognise it by again (a webhook without an id)."""
    kind: FeedbackKind
    disposition: Disposition
    source: str
    targets: Sequence[FeedbackTarget] = ()
    status: str | None = None
    diagnostic: str | None = None
    note: str | None = None


class FeedbackQueries(SuppressionQueries):
    def feedback_seen(self, message_key: str) -> Disposition | None:
        """What became of a message with this key, if one was recorded."""
        with self._reading() as connection:
            value = connection.execute(
                select(feedback_messages.c.disposition).where(
                    feedback_messages.c.message_key == message_key
                )
            ).scalar()
        return None if value is None else Disposition(value)

    def delivery_target(self, delivery_id: int) -> FeedbackTarget | None:
        """The ledger row a VERP token names, if it still exists and reached the relay."""
        return self._one_target(deliveries.c.id == delivery_id)

    def delivery_by_message_id(self, message_id: str) -> FeedbackTarget | None:
        return self._one_target(deliveries.c.message_id == message_id)

    def delivery_for(self, campaign_id: int, subscriber_id: int) -> FeedbackTarget | None:
        """The row of one campaign to one person (an unsubscribe link's claims)."""
        return self._one_target(
            (deliveries.c.campaign_id == campaign_id)
            & (deliveries.c.subscriber_id == subscriber_id)
        )

    def last_delivery_to(self, email: str) -> FeedbackTarget | None:
        """The latest row sent to this address (as the store keys it: case and IDN
        spelling aside), for a report that names only the address."""
        return self._one_target(
            deliveries.c.subscriber_id.in_(
                select(subscribers.c.id).where(subscribers.c.email_key == email_key(email))
            ),
            latest=True,
        )

    def unsubscribe_target(
        self, subscriber_id: int, list_id: int, campaign_id: int | None
    ) -> FeedbackTarget | None:
        """The person and list a mailed unsubscribe's token names, if they still exist."""
        with self._reading() as connection:
            email = connection.execute(
                select(subscribers.c.email).where(subscribers.c.id == subscriber_id)
            ).scalar()
        if email is None:
            return None
        return FeedbackTarget(
            delivery_id=None,
            campaign_id=campaign_id,
            subscriber_id=subscriber_id,
            list_id=list_id,
            email=str(email),
        )

    def _one_target(
        self, condition: ColumnElement[bool], *, latest: bool = False
    ) -> FeedbackTarget | None:
        query = (
            select(
                deliveries.c.id,
                deliveries.c.campaign_id,
                deliveries.c.subscriber_id,
                campaigns.c.list_id,
                deliveries.c.email,
            )
            .join(campaigns, campaigns.c.id == deliveries.c.campaign_id)
            # Only rows that reached the relay: a report about anything else is not ours.
            .where(condition, deliveries.c.status.in_(_REACHED))
        )
        if latest:
            query = query.order_by(deliveries.c.sent_at.desc(), deliveries.c.id.desc())
        with self._reading() as connection:
            row = connection.execute(query.limit(1)).first()
        if row is None:
            return None
        return FeedbackTarget(
            delivery_id=row.id,
            campaign_id=row.campaign_id,
            subscriber_id=row.subscriber_id,
            list_id=row.list_id,
            email=row.email,
        )

    def record_feedback(
        self,
        record: FeedbackRecord,
        *,
        soft_bounce_limit: int,
        soft_bounces_since: datetime,
        now: datetime,
    ) -> list[FeedbackAction] | None:
        """Apply one report and remember its key, all in one transaction: one action per
        target. None: a report with this key was already recorded (nothing changed).

        Hard bounce: off every list. Soft bounce: counted; off every list once there are
        `soft_bounce_limit` since `soft_bounces_since`. Complaint: off every list for good.
        Unsubscribe: off the target's list, recorded as `mailto`.
        """
        with self.engine.begin() as connection:
            if record.message_key is not None and not _first_time(
                connection,
                message_key=record.message_key,
                kind=record.kind.value,
                disposition=record.disposition.value,
                source=record.source[:20],
                note=(record.note or "")[:_MAX_TEXT] or None,
                received_at=now,
            ):
                return None
            return [
                self._apply(
                    connection,
                    record,
                    target,
                    soft_bounce_limit=soft_bounce_limit,
                    soft_bounces_since=soft_bounces_since,
                    now=now,
                )
                for target in record.targets
            ]

    def _apply(
        self,
        connection: Connection,
        record: FeedbackRecord,
        target: FeedbackTarget,
        *,
        soft_bounce_limit: int,
        soft_bounces_since: datetime,
        now: datetime,
    ) -> FeedbackAction:
        key = email_key(target.email)
        detail = " ".join(part for part in (record.status, record.diagnostic) if part)
        detail = f"{detail} ({record.source})"[:_MAX_TEXT] if detail else record.source
        action: FeedbackAction
        later: LaterOutcome | None = None
        if record.kind is FeedbackKind.UNSUBSCRIBE:
            changed = self._unsubscribe(
                connection,
                target.subscriber_id,
                target.list_id,
                UnsubscribeSource.MAILTO,
                target.campaign_id,
            )
            action = FeedbackAction.UNSUBSCRIBED if changed else FeedbackAction.ALREADY
        elif record.kind is FeedbackKind.COMPLAINT:
            later = LaterOutcome.COMPLAINED
            action = self._suppress_once(
                connection,
                key,
                target,
                reason=SuppressionReason.COMPLAINED,
                source=UnsubscribeSource.FEEDBACK_LOOP,
                detail=detail,
                done=FeedbackAction.COMPLAINED,
            )
        elif record.kind is FeedbackKind.HARD_BOUNCE:
            later = LaterOutcome.BOUNCED
            action = self._suppress_once(
                connection,
                key,
                target,
                reason=SuppressionReason.BOUNCED,
                source=UnsubscribeSource.BOUNCE,
                detail=detail,
                done=FeedbackAction.SUPPRESSED,
            )
        else:  # a soft bounce: counted, and suppressed once it repeats
            bounced = _soft_bounced_messages(connection, key, target, since=soft_bounces_since)
            if bounced >= soft_bounce_limit:
                later = LaterOutcome.BOUNCED
                action = self._suppress_once(
                    connection,
                    key,
                    target,
                    reason=SuppressionReason.BOUNCED,
                    source=UnsubscribeSource.BOUNCE,
                    detail=f"{bounced} soft bounces, the last: {detail}"[:_MAX_TEXT],
                    done=FeedbackAction.SUPPRESSED,
                )
            else:
                later, action = LaterOutcome.SOFT_BOUNCED, FeedbackAction.COUNTED
        if later is not None and target.delivery_id is not None:
            _mark_delivery(connection, target.delivery_id, later, now)
        connection.execute(
            feedback_events.insert().values(
                message_key=record.message_key,
                kind=record.kind.value,
                action=action.value,
                email_key=key,
                email=target.email,
                campaign_id=target.campaign_id,
                delivery_id=target.delivery_id,
                status=(record.status or "")[:20] or None,
                diagnostic=(record.diagnostic or "")[:_MAX_TEXT] or None,
                source=record.source[:20],
                created_at=now,
            )
        )
        return action

    def _suppress_once(
        self,
        connection: Connection,
        key: str,
        target: FeedbackTarget,
        *,
        reason: SuppressionReason,
        source: UnsubscribeSource,
        detail: str,
        done: FeedbackAction,
    ) -> FeedbackAction:
        in_force = connection.execute(
            select(suppressions.c.id).where(
                suppressions.c.email_key == key,
                suppressions.c.lifted_at.is_(None),
                suppressions.c.list_id.is_(None),
                suppressions.c.reason == reason.value,
            )
        ).first()
        if in_force is not None:
            return FeedbackAction.ALREADY
        self.suppress(
            connection,
            subscriber_id=target.subscriber_id,
            reason=reason,
            source=source,
            campaign_id=target.campaign_id,
            detail=detail,
        )
        return done

    def feedback_events(
        self, *, campaign_id: int | None = None, limit: int = 200
    ) -> list[FeedbackEvent]:
        """The latest reports per recipient, newest first (`mailer bounces list`)."""
        query = select(feedback_events).order_by(
            feedback_events.c.created_at.desc(), feedback_events.c.id.desc()
        )
        if campaign_id is not None:
            query = query.where(feedback_events.c.campaign_id == campaign_id)
        with self._reading() as connection:
            rows = connection.execute(query.limit(limit)).all()
        return [
            FeedbackEvent(
                at=as_utc(row.created_at) or row.created_at,
                email=row.email,
                kind=FeedbackKind(row.kind),
                action=FeedbackAction(row.action),
                campaign_id=row.campaign_id,
                status=row.status,
                diagnostic=row.diagnostic,
                source=row.source,
            )
            for row in rows
        ]

    def feedback_counts(self, campaign_id: int) -> FeedbackCounts:
        """How many of the campaign's sent rows bounced or complained afterwards."""
        column = deliveries.c.feedback
        query = select(
            func.coalesce(func.sum(case((column == LaterOutcome.BOUNCED.value, 1), else_=0)), 0),
            func.coalesce(
                func.sum(case((column == LaterOutcome.SOFT_BOUNCED.value, 1), else_=0)), 0
            ),
            func.coalesce(func.sum(case((column == LaterOutcome.COMPLAINED.value, 1), else_=0)), 0),
        ).where(deliveries.c.campaign_id == campaign_id, column.is_not(None))
        with self._reading() as connection:
            bounced, soft, complained = connection.execute(query).one()
        return FeedbackCounts(
            bounced=int(bounced), soft_bounced=int(soft), complained=int(complained)
        )


def _mark_delivery(
    connection: Connection, delivery_id: int, later: LaterOutcome, now: datetime
) -> None:
    graver = [o.value for o, weight in _GRAVITY.items() if weight >= _GRAVITY[later]]
    connection.execute(
        update(deliveries)
        .where(
            deliveries.c.id == delivery_id,
            or_(deliveries.c.feedback.is_(None), ~deliveries.c.feedback.in_(graver)),
        )
        .values(feedback=later.value, feedback_at=now)
    )


def _first_time(connection: Connection, **values: object) -> bool:
    """Record a message's key; False if it was already there (also when a concurrent
    reader's transaction recorded it first: PostgreSQL makes this one wait for it)."""
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        statement: ReturningInsert[tuple[int]] = (
            postgresql.insert(feedback_messages)
            .values(**values)
            .on_conflict_do_nothing()
            .returning(feedback_messages.c.id)
        )
    else:
        from sqlalchemy.dialects import sqlite

        statement = (
            sqlite.insert(feedback_messages)
            .values(**values)
            .on_conflict_do_nothing()
            .returning(feedback_messages.c.id)
        )
    return connection.execute(statement).first() is not None


def _soft_bounced_messages(
    connection: Connection, key: str, target: FeedbackTarget, *, since: datetime
) -> int:
    """How many of our messages to this address soft-bounced since `since`, this report's
    included: counted per message, not per report. A message the remote server holds sends
    "delayed" notices, often three or more (after 4 hours, a day, ...), and they all speak
    of one message: counted per report, one slow server would suppress a reader after one
    send. A report tied to no ledger row counts as a message of its own."""
    earlier = connection.execute(
        select(feedback_events.c.delivery_id).where(
            feedback_events.c.email_key == key,
            feedback_events.c.kind == FeedbackKind.SOFT_BOUNCE.value,
            feedback_events.c.created_at >= since,
        )
    ).scalars()
    messages: set[int] = set()
    untied = 0
    for delivery_id in earlier:
        if delivery_id is None:
            untied += 1
        else:
            messages.add(int(delivery_id))
    if target.delivery_id is None:
        untied += 1
    else:
        messages.add(target.delivery_id)
    return len(messages) + untied
