"""Finding subscribers for the dashboard: by address or name, a page at a time.

A search is a LIKE over the case-folded address and the name, ANDed with the list (when
one is given), ordered by id and cut at `limit`; the next page starts after the last id
(keyset pagination), so page 200 costs what page 1 costs. A substring LIKE cannot use an
index; with the limit a search reads rows until it has a page, which is immediate for a
common term and a full scan (tens of milliseconds for 100,000 rows) for one that matches
nobody.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy import and_, or_, select

from mailer.errors import NotFoundError
from mailer.models import Subscriber, SubscriberStatus
from mailer.store.base import StoreBase
from mailer.store.lists import subscriber_from_row
from mailer.store.schema import memberships, subscribers

PAGE_SIZE = 50
MAX_QUERY = 200


@dataclass(frozen=True, slots=True)
class SubscriberPage:
    """One page of a search: the subscribers, and the id the next page starts after."""

    subscribers: list[Subscriber]
    next_after: int | None


def like_pattern(text: str) -> str:
    """`50%_off` -> `%50\\%\\_off%`: the organiser's words matched literally, anywhere."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class SearchQueries(StoreBase):
    def search_subscribers(
        self,
        text: str = "",
        *,
        list_name: str | None = None,
        only_subscribed: bool = False,
        after: int = 0,
        limit: int = PAGE_SIZE,
    ) -> SubscriberPage:
        """Subscribers whose address or name contains `text` (any case), of one list when
        `list_name` is given (with their status on it), by id after `after`."""
        query = select(subscribers).where(subscribers.c.id > after)
        words = text.strip()[:MAX_QUERY]
        if words:
            pattern = like_pattern(words.casefold())
            query = query.where(
                or_(
                    subscribers.c.email_key.like(pattern, escape="\\"),
                    subscribers.c.name.ilike(like_pattern(words), escape="\\"),
                )
            )
        if only_subscribed:
            query = query.where(subscribers.c.status == SubscriberStatus.SUBSCRIBED.value)
        with self._reading() as connection:
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
                    query = query.where(memberships.c.status == SubscriberStatus.SUBSCRIBED.value)
            rows = connection.execute(query.order_by(subscribers.c.id).limit(limit + 1)).all()
        found = []
        for row in rows[:limit]:
            subscriber = subscriber_from_row(row._mapping)
            # On a list, leaving that list is what the organiser needs to see.
            if (
                row._mapping.get("membership_status") == SubscriberStatus.UNSUBSCRIBED
                and subscriber.status is SubscriberStatus.SUBSCRIBED
            ):
                subscriber = replace(subscriber, status=SubscriberStatus.UNSUBSCRIBED)
            found.append(subscriber)
        more = len(rows) > limit
        return SubscriberPage(found, found[-1].id if more and found else None)

    def subscriber_by_id(self, subscriber_id: int) -> Subscriber:
        """The subscriber with this id; NotFoundError once erased (or never there)."""
        with self._reading() as connection:
            row = connection.execute(
                select(subscribers).where(subscribers.c.id == subscriber_id)
            ).first()
        if row is None:
            raise NotFoundError(f"no subscriber with id {subscriber_id}")
        return subscriber_from_row(row._mapping)
