"""Unsubscribes, bounces and complaints: who must never be mailed again, and why."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, func, insert, or_, select, update
from sqlalchemy.sql.dml import ReturningInsert
from sqlalchemy.sql.elements import ColumnElement

from mailer.clock import as_utc, utcnow
from mailer.errors import CampaignError, InputError, NotFoundError
from mailer.models import (
    HistoryEntry,
    Membership,
    Subscriber,
    SubscriberRecord,
    SubscriberStatus,
    SuppressionReason,
    UnsubscribeSource,
)
from mailer.safety import find_unsafe
from mailer.store.base import StoreBase, email_key, set_membership_status
from mailer.store.schema import lists, memberships, subscribers, suppressions


def active_suppression(
    email_key: ColumnElement[str], list_id: ColumnElement[int] | int
) -> ColumnElement[bool]:
    """SQL: an unlifted suppression for this address, global or for this list, exists."""
    return (
        select(suppressions.c.id)
        .where(
            suppressions.c.email_key == email_key,
            suppressions.c.lifted_at.is_(None),
            or_(suppressions.c.list_id.is_(None), suppressions.c.list_id == list_id),
        )
        .exists()
    )


def _insert_suppression(connection: Connection, **values: object) -> bool:
    """Insert unless the same suppression is already in force (a concurrent request won);
    True if this call recorded it. Relies on the uq_suppressions_active index."""
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        statement: ReturningInsert[tuple[int]] = (
            postgresql.insert(suppressions)
            .values(**values)
            .on_conflict_do_nothing()
            .returning(suppressions.c.id)
        )
    else:
        from sqlalchemy.dialects import sqlite

        statement = (
            sqlite.insert(suppressions)
            .values(**values)
            .on_conflict_do_nothing()
            .returning(suppressions.c.id)
        )
    # RETURNING, not rowcount: with psycopg an INSERT that did nothing still reported 1.
    return connection.execute(statement).first() is not None


# Unsubscribes the recipient made themselves, which they may also undo themselves.
_SELF_SERVICE = (UnsubscribeSource.ONE_CLICK.value, UnsubscribeSource.PAGE.value)

# What a person asked for (as opposed to a mailbox that did not exist): lifting one of
# these "from every list" for one list keeps the person off their other lists.
_CONSENT = (
    SuppressionReason.UNSUBSCRIBED.value,
    SuppressionReason.COMPLAINED.value,
    SuppressionReason.MANUAL.value,
)
MAX_REASON = 1000


@dataclass(slots=True)
class Resubscribed:
    """What `subscribers resubscribe` did."""

    email: str
    lifted: list[HistoryEntry] = field(default_factory=list)
    kept_off: list[str] = field(default_factory=list)
    """Other lists the person stays off: an unsubscribe or complaint from every list,
    lifted for this one list, is recorded again for each of them."""
    bounce_lifted_on: list[str] = field(default_factory=list)
    """A lifted bounce is about the mailbox: these lists mail the address again too."""
    changed: bool = False


class SuppressionQueries(StoreBase):
    def unsubscribe(
        self,
        subscriber_id: int,
        list_id: int,
        *,
        source: UnsubscribeSource,
        campaign_id: int | None = None,
    ) -> bool:
        """Take the subscriber off the list for good; True if they were on it until now.

        Idempotent: a repeated one-click POST changes nothing and adds no second record.
        """
        with self.engine.begin() as connection:
            return self._unsubscribe(connection, subscriber_id, list_id, source, campaign_id)

    def _unsubscribe(
        self,
        connection: Connection,
        subscriber_id: int,
        list_id: int | None,
        source: UnsubscribeSource,
        campaign_id: int | None,
    ) -> bool:
        now = utcnow()
        key = connection.execute(
            select(subscribers.c.email_key).where(subscribers.c.id == subscriber_id)
        ).scalar()
        if key is None:
            raise NotFoundError(f"no subscriber with id {subscriber_id}")
        if list_id is None:
            changed = connection.execute(
                update(subscribers)
                .where(
                    subscribers.c.id == subscriber_id,
                    subscribers.c.status == SubscriberStatus.SUBSCRIBED.value,
                )
                .values(status=SubscriberStatus.UNSUBSCRIBED.value, updated_at=now)
            ).rowcount
        else:
            changed = set_membership_status(
                connection, subscriber_id, list_id, to=SubscriberStatus.UNSUBSCRIBED, now=now
            )
        already = connection.execute(
            select(suppressions.c.id).where(
                suppressions.c.email_key == key,
                suppressions.c.lifted_at.is_(None),
                suppressions.c.list_id.is_(None)
                if list_id is None
                else suppressions.c.list_id == list_id,
            )
        ).first()
        recorded = already is None and _insert_suppression(
            connection,
            email_key=key,
            list_id=list_id,
            reason=SuppressionReason.UNSUBSCRIBED.value,
            source=source.value,
            campaign_id=campaign_id,
            created_at=now,
        )
        return bool(changed) or recorded

    def unsubscribe_email(
        self, email: str, list_name: str | None = None, *, source: UnsubscribeSource
    ) -> bool:
        """The CLI's `subscribers unsubscribe`: from one list, or (no list) from everything."""
        subscriber = self.get_subscriber_id(email)
        with self.engine.begin() as connection:
            list_id = self._list_id(connection, list_name) if list_name is not None else None
            return self._unsubscribe(connection, subscriber, list_id, source, None)

    def get_subscriber_id(self, email: str) -> int:
        return int(self._subscriber_row(email, subscribers.c.id).id)

    def resubscribe(self, subscriber_id: int, list_id: int) -> bool:
        """Undo the recipient's own unsubscribe from this list (a mistaken click).

        Only the recipient's own list-level unsubscribes (one-click or the page) are lifted:
        a bounce, a complaint, or a removal the organiser made on request stays in force,
        whoever holds an old message with the link.
        """
        now = utcnow()
        with self.engine.begin() as connection:
            key = connection.execute(
                select(subscribers.c.email_key).where(subscribers.c.id == subscriber_id)
            ).scalar()
            if key is None:
                raise NotFoundError(f"no subscriber with id {subscriber_id}")
            own_unsubscribe = and_(
                suppressions.c.list_id == list_id,
                suppressions.c.reason == SuppressionReason.UNSUBSCRIBED.value,
                suppressions.c.source.in_(_SELF_SERVICE),
            )
            in_force = (suppressions.c.email_key == key) & suppressions.c.lifted_at.is_(None)
            # Anything else in force (a bounce, a complaint, a removal on request) wins:
            # then nothing is lifted at all.
            other = connection.execute(
                select(suppressions.c.id).where(
                    in_force,
                    or_(suppressions.c.list_id.is_(None), suppressions.c.list_id == list_id),
                    ~own_unsubscribe,
                )
            ).first()
            if other is not None:
                return False
            connection.execute(
                update(suppressions).where(in_force, own_unsubscribe).values(lifted_at=now)
            )
            return set_membership_status(
                connection, subscriber_id, list_id, to=SubscriberStatus.SUBSCRIBED, now=now
            )

    def suppress(
        self,
        connection: Connection,
        *,
        subscriber_id: int,
        reason: SuppressionReason,
        source: UnsubscribeSource,
        campaign_id: int | None = None,
        detail: str | None = None,
    ) -> None:
        """Suppress an address from every list (hard bounce, complaint), inside a transaction."""
        now = utcnow()
        key = connection.execute(
            select(subscribers.c.email_key).where(subscribers.c.id == subscriber_id)
        ).scalar_one()
        status = (
            SubscriberStatus.BOUNCED
            if reason is SuppressionReason.BOUNCED
            else SubscriberStatus.COMPLAINED
            if reason is SuppressionReason.COMPLAINED
            else SubscriberStatus.UNSUBSCRIBED
        )
        connection.execute(
            update(subscribers)
            .where(subscribers.c.id == subscriber_id)
            .values(status=status.value, updated_at=now)
        )
        _insert_suppression(
            connection,
            email_key=key,
            list_id=None,
            reason=reason.value,
            source=source.value,
            campaign_id=campaign_id,
            detail=detail,
            created_at=now,
        )

    def is_mailable(self, subscriber_id: int, list_id: int) -> bool:
        """Subscribed globally and to the list, with no suppression in force."""
        query = (
            select(subscribers.c.id)
            .join(
                memberships,
                and_(
                    memberships.c.subscriber_id == subscribers.c.id,
                    memberships.c.list_id == list_id,
                ),
            )
            .where(
                subscribers.c.id == subscriber_id,
                subscribers.c.status == SubscriberStatus.SUBSCRIBED.value,
                memberships.c.status == SubscriberStatus.SUBSCRIBED.value,
                ~active_suppression(subscribers.c.email_key, list_id),
            )
        )
        with self._reading() as connection:
            return connection.execute(query).first() is not None

    def campaign_unsubscribes(self, campaign_id: int) -> int:
        """How many people left through this campaign's links (lifted later or not)."""
        query = select(func.count(func.distinct(suppressions.c.email_key))).where(
            suppressions.c.campaign_id == campaign_id,
            suppressions.c.reason == SuppressionReason.UNSUBSCRIBED.value,
        )
        with self._reading() as connection:
            return int(connection.execute(query).scalar_one())

    def subscriber_record(self, email: str) -> SubscriberRecord:
        """The subscriber, their lists, and every suppression of the address (an erased
        subscriber's too: suppressions outlive the data)."""
        key = email_key(email)
        with self._reading() as connection:
            row = connection.execute(
                select(subscribers).where(subscribers.c.email_key == key)
            ).first()
            history = _history(connection, key)
            if row is None and not history:
                raise NotFoundError(f"no subscriber {email!r}")
            on_lists: list[Membership] = []
            subscriber = None
            if row is not None:
                subscriber = Subscriber(
                    id=row.id,
                    email=row.email,
                    name=row.name,
                    attributes=dict(row.attributes or {}),
                    status=SubscriberStatus(row.status),
                )
                on_lists = [
                    Membership(
                        m.name, SubscriberStatus(m.status), as_utc(m.created_at) or m.created_at
                    )
                    for m in connection.execute(
                        select(lists.c.name, memberships.c.status, memberships.c.created_at)
                        .join(lists, lists.c.id == memberships.c.list_id)
                        .where(memberships.c.subscriber_id == row.id)
                        .order_by(lists.c.name)
                    )
                ]
        return SubscriberRecord(
            email=subscriber.email if subscriber else email.strip(),
            subscriber=subscriber,
            created_at=as_utc(row.created_at) if row is not None else None,
            memberships=on_lists,
            history=history,
        )

    def admin_resubscribe(
        self, email: str, list_name: str, *, reason: str, force: bool = False
    ) -> Resubscribed:
        """The organiser puts someone back on a list, with a reason (they asked by phone,
        a mistaken bounce): lifts the list's unsubscribe, an unsubscribe from every list
        (for this list only) and a bounce; a complaint only with `force`. Recorded in the
        history as the organiser's, with the reason. All or nothing."""
        reason = reason.strip()
        if not reason:
            raise InputError("a reason is needed", hint="--reason 'asked by phone, 3 May'")
        problem = find_unsafe(reason.replace("\n", " ").replace("\t", " "))
        if problem is not None or len(reason) > MAX_REASON:
            raise InputError(
                f"reason: {problem or f'longer than the {MAX_REASON} characters allowed'}"
            )
        now = utcnow()
        with self.engine.begin() as connection:
            row = connection.execute(
                select(subscribers.c.id, subscribers.c.email, subscribers.c.email_key).where(
                    subscribers.c.email_key == email_key(email)
                )
            ).first()
            if row is None:
                raise NotFoundError(
                    f"no subscriber {email!r}",
                    hint=f"Add them: `mailer subscribers add {email.strip()} --list {list_name}`.",
                )
            list_id = self._list_id(connection, list_name)
            done = Resubscribed(row.email)
            in_force = connection.execute(
                select(suppressions, lists.c.name.label("list_name"))
                .outerjoin(lists, lists.c.id == suppressions.c.list_id)
                .where(
                    suppressions.c.email_key == row.email_key,
                    suppressions.c.lifted_at.is_(None),
                    or_(suppressions.c.list_id.is_(None), suppressions.c.list_id == list_id),
                )
                .order_by(suppressions.c.created_at, suppressions.c.id)
            ).all()
            complaints = [s for s in in_force if s.reason == SuppressionReason.COMPLAINED]
            if complaints and not force:
                first = complaints[0]
                origin = f" to campaign {first.campaign_id}" if first.campaign_id else ""
                raise CampaignError(
                    f"{row.email} complained{origin} on {as_utc(first.created_at):%Y-%m-%d} "
                    "(marked a message as spam); nothing was changed",
                    hint="Only if they asked to be back in writing: add --force.",
                )
            other_lists = connection.execute(
                select(lists.c.id, lists.c.name)
                .join(memberships, memberships.c.list_id == lists.c.id)
                .where(
                    memberships.c.subscriber_id == row.id,
                    memberships.c.list_id != list_id,
                    memberships.c.status == SubscriberStatus.SUBSCRIBED.value,
                )
                .order_by(lists.c.name)
            ).all()
            for lifted in in_force:
                done.lifted.append(_entry(lifted))
                if lifted.list_id is not None:
                    continue
                if lifted.reason in _CONSENT:
                    _keep_off(connection, row.id, other_lists, lifted, now, list_name)
                    done.kept_off = [other.name for other in other_lists]
                else:
                    done.bounce_lifted_on = [other.name for other in other_lists]
            if in_force:
                connection.execute(
                    update(suppressions)
                    .where(suppressions.c.id.in_([s.id for s in in_force]))
                    .values(lifted_at=now)
                )
            done.changed = bool(in_force)
            if connection.execute(
                update(subscribers)
                .where(
                    subscribers.c.id == row.id,
                    subscribers.c.status != SubscriberStatus.SUBSCRIBED.value,
                )
                .values(status=SubscriberStatus.SUBSCRIBED.value, updated_at=now)
            ).rowcount:
                done.changed = True
            done.changed = _join(connection, row.id, list_id, now) or done.changed
            if done.changed:
                connection.execute(
                    insert(suppressions).values(
                        email_key=row.email_key,
                        list_id=list_id,
                        reason=SuppressionReason.RESUBSCRIBED.value,
                        source=UnsubscribeSource.ADMIN.value,
                        detail=reason,
                        created_at=now,
                        lifted_at=now,  # a record, never in force
                    )
                )
            return done


def _entry(row: Row[Any]) -> HistoryEntry:
    return HistoryEntry(
        at=as_utc(row.created_at) or row.created_at,
        reason=SuppressionReason(row.reason),
        source=UnsubscribeSource(row.source),
        list_name=row.list_name,
        campaign_id=row.campaign_id,
        detail=row.detail,
        lifted_at=as_utc(row.lifted_at),
    )


def _history(connection: Connection, key: str) -> list[HistoryEntry]:
    rows = connection.execute(
        select(suppressions, lists.c.name.label("list_name"))
        .outerjoin(lists, lists.c.id == suppressions.c.list_id)
        .where(suppressions.c.email_key == key)
        .order_by(suppressions.c.created_at, suppressions.c.id)
    ).all()
    return [_entry(row) for row in rows]


def _keep_off(
    connection: Connection,
    subscriber_id: int,
    other_lists: Sequence[Any],
    lifted: Row[Any],
    now: datetime,
    list_name: str,
) -> None:
    """Record `lifted` (from every list) again for each other list the person is on."""
    for other in other_lists:
        set_membership_status(
            connection,
            subscriber_id,
            other.id,
            to=SubscriberStatus.UNSUBSCRIBED,
            now=now,
        )
        _insert_suppression(
            connection,
            email_key=lifted.email_key,
            list_id=other.id,
            reason=lifted.reason,
            source=lifted.source,
            campaign_id=lifted.campaign_id,
            detail=f"kept from every list when resubscribed to {list_name!r}",
            created_at=now,
        )


def _join(connection: Connection, subscriber_id: int, list_id: int, now: datetime) -> bool:
    """Subscribed to the list, as a new member or again; True if that changed anything."""
    status = connection.execute(
        select(memberships.c.status).where(
            memberships.c.subscriber_id == subscriber_id, memberships.c.list_id == list_id
        )
    ).scalar()
    if status == SubscriberStatus.SUBSCRIBED:
        return False
    if status is None:
        connection.execute(
            insert(memberships).values(
                list_id=list_id,
                subscriber_id=subscriber_id,
                status=SubscriberStatus.SUBSCRIBED.value,
                created_at=now,
                updated_at=now,
            )
        )
        return True
    return set_membership_status(
        connection, subscriber_id, list_id, to=SubscriberStatus.SUBSCRIBED, now=now
    )
