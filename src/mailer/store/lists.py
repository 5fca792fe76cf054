"""Lists and subscribers: reading, counting, exporting, removing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from sqlalchemy import and_, case, delete, func, select

from mailer.clock import as_utc
from mailer.errors import NotFoundError
from mailer.models import ListSummary, Subscriber, SubscriberStatus
from mailer.store.base import StoreBase
from mailer.store.schema import lists, memberships, subscribers

_EXPORT_BATCH = 1000


def subscriber_from_row(row: object) -> Subscriber:
    return Subscriber(
        id=row.id,  # type: ignore[attr-defined]
        email=row.email,  # type: ignore[attr-defined]
        name=row.name,  # type: ignore[attr-defined]
        attributes=dict(row.attributes or {}),  # type: ignore[attr-defined]
        status=SubscriberStatus(row.status),  # type: ignore[attr-defined]
    )


class ListQueries(StoreBase):
    def list_id(self, name: str) -> int:
        with self.engine.connect() as connection:
            return self._list_id(connection, name)

    def list_name(self, list_id: int) -> str:
        with self.engine.connect() as connection:
            name = connection.execute(select(lists.c.name).where(lists.c.id == list_id)).scalar()
        if name is None:
            raise NotFoundError(f"no list with id {list_id}")
        return str(name)

    def lists(self) -> list[ListSummary]:
        both_subscribed = (memberships.c.status == SubscriberStatus.SUBSCRIBED.value) & (
            subscribers.c.status == SubscriberStatus.SUBSCRIBED.value
        )
        active = func.sum(case((both_subscribed, 1), else_=0))
        query = (
            select(
                lists.c.name, lists.c.created_at, func.count(memberships.c.subscriber_id), active
            )
            .select_from(
                lists.outerjoin(memberships, memberships.c.list_id == lists.c.id).outerjoin(
                    subscribers, subscribers.c.id == memberships.c.subscriber_id
                )
            )
            .group_by(lists.c.id, lists.c.name, lists.c.created_at)
            .order_by(lists.c.name)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [
            ListSummary(
                name=name,
                subscribed=int(subscribed or 0),
                unsubscribed=int(total) - int(subscribed or 0),
                created_at=as_utc(created_at) or created_at,
            )
            for name, created_at, total, subscribed in rows
        ]

    def iter_subscribers(
        self, list_name: str | None = None, *, only_subscribed: bool = False
    ) -> Iterator[Subscriber]:
        """Every subscriber (of one list), by id, fetched in pages so memory stays flat."""
        after = 0
        while True:
            with self.engine.connect() as connection:
                query = select(subscribers).where(subscribers.c.id > after)
                if list_name is not None:
                    list_id = self._list_id(connection, list_name)
                    query = query.add_columns(memberships.c.status.label("membership_status")).join(
                        memberships,
                        and_(
                            memberships.c.subscriber_id == subscribers.c.id,
                            memberships.c.list_id == list_id,
                        ),
                    )
                    if only_subscribed:
                        query = query.where(
                            memberships.c.status == SubscriberStatus.SUBSCRIBED.value
                        )
                if only_subscribed:
                    query = query.where(subscribers.c.status == SubscriberStatus.SUBSCRIBED.value)
                rows = connection.execute(
                    query.order_by(subscribers.c.id).limit(_EXPORT_BATCH)
                ).all()
            if not rows:
                return
            for row in rows:
                subscriber = subscriber_from_row(row)
                # On a list, a list-level unsubscribe is what the organiser needs to see.
                membership = getattr(row, "membership_status", None)
                if (
                    membership == SubscriberStatus.UNSUBSCRIBED
                    and subscriber.status is SubscriberStatus.SUBSCRIBED
                ):
                    subscriber = replace(subscriber, status=SubscriberStatus.UNSUBSCRIBED)
                yield subscriber
            after = rows[-1].id

    def count_subscribers(
        self, list_name: str | None = None, *, only_subscribed: bool = True
    ) -> int:
        with self.engine.connect() as connection:
            query = select(func.count()).select_from(subscribers)
            if list_name is not None:
                list_id = self._list_id(connection, list_name)
                query = query.join(
                    memberships,
                    and_(
                        memberships.c.subscriber_id == subscribers.c.id,
                        memberships.c.list_id == list_id,
                    ),
                )
                if only_subscribed:
                    query = query.where(memberships.c.status == SubscriberStatus.SUBSCRIBED.value)
            if only_subscribed:
                query = query.where(subscribers.c.status == SubscriberStatus.SUBSCRIBED.value)
            return int(connection.execute(query).scalar_one())

    def get_subscriber(self, email: str) -> Subscriber:
        return subscriber_from_row(self._subscriber_row(email))

    def remove_subscriber(self, email: str, list_name: str | None = None) -> None:
        """Remove from one list, or erase the subscriber's data entirely.

        Suppressions are keyed by address and kept, so an erased person who had
        unsubscribed is still never mailed if a later import brings them back.
        """
        subscriber = self.get_subscriber(email)
        with self.engine.begin() as connection:
            if list_name is None:
                connection.execute(delete(subscribers).where(subscribers.c.id == subscriber.id))
                return
            list_id = self._list_id(connection, list_name)
            removed = connection.execute(
                delete(memberships).where(
                    memberships.c.list_id == list_id,
                    memberships.c.subscriber_id == subscriber.id,
                )
            )
            if removed.rowcount == 0:
                raise NotFoundError(f"{email!r} is not on list {list_name!r}")
