"""Guests' answers (issue 14): one per (event, subscriber), places given out one at a time.

The event is its file's slug, the identity the calendar invite's UID and SEQUENCE already
use: the invitation sent to two lists, or sent again, shares one answer per person.

Capacity: every answer of an event is recorded inside one serialised transaction per
event, so 50 "yes" at once for 40 places leave exactly 40 places taken (guests counted)
and 10 waiting. PostgreSQL: `SELECT ... FOR UPDATE` on the event's `rsvp_events` row,
which every answer to that event takes first (answers to other events do not wait).
SQLite: `BEGIN IMMEDIATE`, the database's single writer lock, taken before anything is
read, so no two answers count the same free places (with WAL, readers still go on).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)

from mailer.clock import as_utc
from mailer.models import (
    Attendee,
    AudienceFilter,
    DeliveryStatus,
    FollowUpAudience,
    Rsvp,
    RsvpChoice,
    RsvpCounts,
    RsvpOutcome,
    RsvpStatus,
    SubscriberStatus,
)
from mailer.store.base import StoreBase
from mailer.store.schema import (
    campaigns,
    deliveries,
    memberships,
    rsvp_events,
    rsvps,
    subscribers,
)
from mailer.store.suppressions import active_suppression

_ANSWER_FILTERS = {
    AudienceFilter.YES: RsvpStatus.YES,
    AudienceFilter.WAITING: RsvpStatus.WAITING,
    AudienceFilter.MAYBE: RsvpStatus.MAYBE,
    AudienceFilter.NO: RsvpStatus.NO,
}
# Rows of an earlier reminder that reached, or may still reach, their recipient.
_REMINDED = (
    DeliveryStatus.QUEUED,
    DeliveryStatus.SENDING,
    DeliveryStatus.SENT,
    DeliveryStatus.DEFERRED,
    DeliveryStatus.UNKNOWN,
)


def follow_up_condition(
    audience: FollowUpAudience, *, campaign_id: int | None = None
) -> ColumnElement[bool]:
    """SQL condition on `subscribers`: who of a list a follow-up campaign takes."""
    answer = rsvps.c.subscriber_id == subscribers.c.id
    same_event = rsvps.c.event_slug == audience.event_slug
    conditions: list[ColumnElement[bool]] = []
    if audience.only is not None:
        statuses = [s.value for f, s in _ANSWER_FILTERS.items() if f in audience.only]
        chosen: list[ColumnElement[bool]] = []
        if statuses:
            chosen.append(exists().where(answer, same_event, rsvps.c.status.in_(statuses)))
        if AudienceFilter.NO_ANSWER in audience.only:
            chosen.append(~exists().where(answer, same_event))
        conditions.append(or_(*chosen))
    if audience.once_per_person:
        earlier = exists().where(
            deliveries.c.subscriber_id == subscribers.c.id,
            deliveries.c.status.in_([s.value for s in _REMINDED]),
            campaigns.c.id == deliveries.c.campaign_id,
            campaigns.c.event_slug == audience.event_slug,
            campaigns.c.message == audience.message.value,
            *([campaigns.c.id != campaign_id] if campaign_id is not None else []),
        )
        conditions.append(~earlier)
    return and_(*conditions) if conditions else and_(True)


class RsvpQueries(StoreBase):
    def record_rsvp(
        self,
        *,
        event_slug: str,
        subscriber_id: int,
        campaign_id: int,
        choice: RsvpChoice,
        guests: int,
        note: str,
        capacity: int | None,
        now: datetime,
    ) -> RsvpOutcome:
        """Record a guest's answer (or leave it as it is when nothing changed), then move
        up whoever the places freed let in, in the order they joined the waiting list."""
        with self._event_locked(event_slug, now) as connection:
            row = connection.execute(
                select(rsvps).where(
                    rsvps.c.event_slug == event_slug, rsvps.c.subscriber_id == subscriber_id
                )
            ).first()
            before = _rsvp(row) if row is not None else None
            if choice is not RsvpChoice.YES:
                guests = 0 if choice is RsvpChoice.NO else guests
            wanted = RsvpStatus(choice.value)
            if before is not None and _same(before, wanted, guests, note):
                return RsvpOutcome(before, changed=False)
            status, refused = wanted, False
            if choice is RsvpChoice.YES and capacity is not None:
                free = capacity - _places_taken(connection, event_slug, besides=subscriber_id)
                if 1 + guests > free:
                    if before is not None and before.status is RsvpStatus.YES:
                        # Keep the place they hold rather than lose it for a guest too many.
                        guests, refused = before.guests, True
                    else:
                        status = RsvpStatus.WAITING
            values: dict[str, Any] = {
                "campaign_id": campaign_id,
                "status": status.value,
                "guests": guests,
                "note": note or None,
                "answered_at": now,
                "updated_at": now,
            }
            if status is RsvpStatus.WAITING:
                keep = before is not None and before.status is RsvpStatus.WAITING
                values["waiting_since"] = row.waiting_since if keep and row is not None else now
            else:
                values["waiting_since"] = None
            if row is None:
                connection.execute(
                    insert(rsvps).values(
                        event_slug=event_slug, subscriber_id=subscriber_id, **values
                    )
                )
            else:
                connection.execute(update(rsvps).where(rsvps.c.id == row.id).values(**values))
            promoted = _promote(connection, event_slug, capacity, now)
            after = Rsvp(status, guests, note, now, None)
            return RsvpOutcome(after, changed=True, promoted=promoted, refused_guests=refused)

    def guest(self, subscriber_id: int) -> tuple[str, str] | None:
        """(name, address) of the subscriber an RSVP link names; None once erased. Their
        list memberships do not matter: answering is not subscribing."""
        with self._reading() as connection:
            row = connection.execute(
                select(subscribers.c.name, subscribers.c.email).where(
                    subscribers.c.id == subscriber_id
                )
            ).first()
        return None if row is None else (str(row.name), str(row.email))

    def get_rsvp(self, event_slug: str, subscriber_id: int) -> Rsvp | None:
        with self._reading() as connection:
            row = connection.execute(
                select(rsvps).where(
                    rsvps.c.event_slug == event_slug, rsvps.c.subscriber_id == subscriber_id
                )
            ).first()
        return None if row is None else _rsvp(row)

    def waiting_position(self, event_slug: str, subscriber_id: int) -> int | None:
        """1 for the first on the waiting list; None when not waiting."""
        with self._reading() as connection:
            rows = connection.execute(
                select(rsvps.c.subscriber_id)
                .where(
                    rsvps.c.event_slug == event_slug,
                    rsvps.c.status == RsvpStatus.WAITING.value,
                )
                .order_by(rsvps.c.waiting_since, rsvps.c.id)
            ).scalars()
            for position, waiting in enumerate(rows, start=1):
                if waiting == subscriber_id:
                    return position
        return None

    def mark_rsvp_notified(self, event_slug: str, subscriber_id: int, *, now: datetime) -> None:
        """The guest moved up has been told (the relay accepted the message)."""
        with self.engine.begin() as connection:
            connection.execute(
                update(rsvps)
                .where(rsvps.c.event_slug == event_slug, rsvps.c.subscriber_id == subscriber_id)
                .values(notified_at=now)
            )

    def rsvp_counts(self, event_slug: str, *, list_id: int | None = None) -> RsvpCounts:
        """The answers to an event (of one list's members, any status: answering is not
        subscribing) and, with a list, its subscribed members who have not answered."""
        query = (
            select(rsvps.c.status, func.count(), func.coalesce(func.sum(rsvps.c.guests), 0))
            .where(rsvps.c.event_slug == event_slug)
            .group_by(rsvps.c.status)
        )
        if list_id is not None:
            query = query.where(_member_of(list_id))
        counts: dict[str, int] = {}
        with self._reading() as connection:
            for status, count, guests in connection.execute(query):
                counts[status] = int(count)
                counts[f"guests_{status}"] = int(guests)
            no_answer = 0
            if list_id is not None:
                no_answer = int(
                    connection.execute(
                        select(func.count())
                        .select_from(subscribers)
                        .join(
                            memberships,
                            and_(
                                memberships.c.subscriber_id == subscribers.c.id,
                                memberships.c.list_id == list_id,
                            ),
                        )
                        .where(
                            subscribers.c.status == SubscriberStatus.SUBSCRIBED.value,
                            memberships.c.status == SubscriberStatus.SUBSCRIBED.value,
                            ~active_suppression(subscribers.c.email_key, list_id),
                            ~exists().where(
                                rsvps.c.subscriber_id == subscribers.c.id,
                                rsvps.c.event_slug == event_slug,
                            ),
                        )
                    ).scalar_one()
                )
            untold = int(
                connection.execute(
                    select(func.count()).where(
                        rsvps.c.event_slug == event_slug,
                        rsvps.c.status == RsvpStatus.YES.value,
                        rsvps.c.promoted_at.is_not(None),
                        rsvps.c.notified_at.is_(None),
                        *([_member_of(list_id)] if list_id is not None else []),
                    )
                ).scalar_one()
            )
        return RsvpCounts(
            untold=untold,
            yes=counts.get("yes", 0),
            waiting=counts.get("waiting", 0),
            maybe=counts.get("maybe", 0),
            no=counts.get("no", 0),
            no_answer=no_answer,
            guests_yes=counts.get("guests_yes", 0),
            guests_waiting=counts.get("guests_waiting", 0),
            guests_maybe=counts.get("guests_maybe", 0),
        )

    def attendees(self, event_slug: str, *, list_id: int | None = None) -> Iterator[Attendee]:
        """Everyone who answered, yes first, then waiting (in order), maybe, no."""
        order = {s: n for n, s in enumerate(("yes", "waiting", "maybe", "no"))}
        query = (
            select(
                subscribers.c.name,
                subscribers.c.email,
                rsvps.c.status,
                rsvps.c.guests,
                rsvps.c.note,
                rsvps.c.answered_at,
                rsvps.c.waiting_since,
                rsvps.c.id,
            )
            .join(subscribers, subscribers.c.id == rsvps.c.subscriber_id)
            .where(rsvps.c.event_slug == event_slug)
        )
        if list_id is not None:
            query = query.where(_member_of(list_id))
        with self._reading() as connection:
            rows = list(connection.execute(query).all())
        rows.sort(
            key=lambda r: (order[r.status], as_utc(r.waiting_since) or as_utc(r.answered_at), r.id)
        )
        for row in rows:
            yield Attendee(
                name=row.name,
                email=row.email,
                status=RsvpStatus(row.status),
                guests=int(row.guests),
                note=row.note or "",
                answered_at=as_utc(row.answered_at),
            )

    def count_follow_up(self, list_id: int, audience: FollowUpAudience) -> int:
        """How many a follow-up to this list would reach now (what its snapshot takes)."""
        query = (
            select(func.count())
            .select_from(subscribers)
            .join(
                memberships,
                and_(
                    memberships.c.subscriber_id == subscribers.c.id,
                    memberships.c.list_id == list_id,
                ),
            )
            .where(
                subscribers.c.status == SubscriberStatus.SUBSCRIBED.value,
                memberships.c.status == SubscriberStatus.SUBSCRIBED.value,
                ~active_suppression(subscribers.c.email_key, list_id),
                follow_up_condition(audience),
            )
        )
        with self._reading() as connection:
            return int(connection.execute(query).scalar_one())

    @contextmanager
    def _event_locked(self, event_slug: str, now: datetime) -> Iterator[Connection]:
        """One transaction in which this event's answers are decided one at a time."""
        with self.engine.connect() as connection:
            dialect = connection.dialect.name
            if dialect == "sqlite":
                # The write lock first: a deferred transaction would read the free places
                # and only then queue for the lock, so two could count the same place.
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                if dialect == "postgresql":
                    from sqlalchemy.dialects import postgresql

                    connection.execute(
                        postgresql.insert(rsvp_events)
                        .values(event_slug=event_slug, created_at=now)
                        .on_conflict_do_nothing()
                    )
                    connection.execute(
                        select(rsvp_events.c.event_slug)
                        .where(rsvp_events.c.event_slug == event_slug)
                        .with_for_update()
                    )
                else:
                    from sqlalchemy.dialects import sqlite

                    connection.execute(
                        sqlite.insert(rsvp_events)
                        .values(event_slug=event_slug, created_at=now)
                        .on_conflict_do_nothing()
                    )
                yield connection
            except BaseException:
                connection.rollback()
                raise
            connection.commit()


def _same(before: Rsvp, wanted: RsvpStatus, guests: int, note: str) -> bool:
    status = before.status
    if wanted is RsvpStatus.YES and status is RsvpStatus.WAITING:
        status = RsvpStatus.YES  # still waiting for the same: nothing to change
    return status is wanted and before.guests == guests and before.note == note


def _rsvp(row: Any) -> Rsvp:
    return Rsvp(
        status=RsvpStatus(row.status),
        guests=int(row.guests),
        note=row.note or "",
        answered_at=row.answered_at.replace(tzinfo=row.answered_at.tzinfo or UTC),
        promoted_at=as_utc(row.promoted_at),
    )


def _member_of(list_id: int) -> ColumnElement[bool]:
    return exists().where(
        memberships.c.subscriber_id == rsvps.c.subscriber_id, memberships.c.list_id == list_id
    )


def _places_taken(connection: Connection, event_slug: str, *, besides: int | None = None) -> int:
    query = select(func.coalesce(func.sum(1 + rsvps.c.guests), 0)).where(
        rsvps.c.event_slug == event_slug, rsvps.c.status == RsvpStatus.YES.value
    )
    if besides is not None:
        query = query.where(rsvps.c.subscriber_id != besides)
    return int(connection.execute(query).scalar_one())


def _promote(
    connection: Connection, event_slug: str, capacity: int | None, now: datetime
) -> tuple[int, ...]:
    """Move people up from the waiting list in the order they joined it, each whose party
    (they and their guests) fits the places free: a party too big for what is free waits
    for more, and the next who fits is not kept out (as a new "yes" that fits is not),
    so no place stays empty while someone waiting could take it."""
    if capacity is None:
        waiting = rsvps.c.status == RsvpStatus.WAITING.value
        ids = connection.execute(
            select(rsvps.c.subscriber_id).where(rsvps.c.event_slug == event_slug, waiting)
        ).scalars()
        moved = tuple(int(i) for i in ids)
    else:
        free = capacity - _places_taken(connection, event_slug)
        queue = connection.execute(
            select(rsvps.c.subscriber_id, rsvps.c.guests)
            .where(rsvps.c.event_slug == event_slug, rsvps.c.status == RsvpStatus.WAITING.value)
            .order_by(rsvps.c.waiting_since, rsvps.c.id)
        ).all()
        chosen: list[int] = []
        for subscriber_id, guests in queue:
            if 1 + int(guests) > free:
                continue
            free -= 1 + int(guests)
            chosen.append(int(subscriber_id))
        moved = tuple(chosen)
    if moved:
        connection.execute(
            update(rsvps)
            .where(rsvps.c.event_slug == event_slug, rsvps.c.subscriber_id.in_(moved))
            .values(
                status=RsvpStatus.YES.value,
                waiting_since=None,
                promoted_at=now,
                notified_at=None,
                updated_at=now,
            )
        )
    return moved
