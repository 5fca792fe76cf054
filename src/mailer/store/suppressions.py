"""Unsubscribes, bounces and complaints: who must never be mailed again, and why."""

from __future__ import annotations

from sqlalchemy import Connection, and_, or_, select, update
from sqlalchemy.sql.dml import ReturningInsert
from sqlalchemy.sql.elements import ColumnElement

from mailer.clock import utcnow
from mailer.errors import NotFoundError
from mailer.models import SubscriberStatus, SuppressionReason, UnsubscribeSource
from mailer.store.base import StoreBase, set_membership_status
from mailer.store.schema import memberships, subscribers, suppressions


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
        with self.engine.connect() as connection:
            return connection.execute(query).first() is not None
