"""What the unsubscribe pages read: one recipient's address, list and state, by ids."""

from __future__ import annotations

from sqlalchemy import and_, select, text

from mailer.models import PageRecipient, SubscriberStatus
from mailer.store.base import StoreBase
from mailer.store.schema import lists, memberships, subscribers, suppressions


class PageQueries(StoreBase):
    def page_recipient(self, subscriber_id: int, list_id: int) -> PageRecipient | None:
        """The subscriber and list a token names; None if either no longer exists."""
        list_suppressed = (
            select(suppressions.c.id)
            .where(
                suppressions.c.email_key == subscribers.c.email_key,
                suppressions.c.list_id == list_id,
                suppressions.c.lifted_at.is_(None),
            )
            .exists()
        )
        query = (
            select(
                subscribers.c.email,
                lists.c.name,
                lists.c.title,
                memberships.c.status.label("membership"),
                list_suppressed.label("suppressed"),
            )
            .select_from(
                subscribers.join(lists, lists.c.id == list_id).outerjoin(
                    memberships,
                    and_(
                        memberships.c.subscriber_id == subscribers.c.id,
                        memberships.c.list_id == list_id,
                    ),
                )
            )
            .where(subscribers.c.id == subscriber_id)
        )
        with self._reading() as connection:
            row = connection.execute(query).first()
        if row is None:
            return None
        left = row.membership == SubscriberStatus.UNSUBSCRIBED.value or bool(row.suppressed)
        return PageRecipient(
            email=row.email, list_name=row.name, unsubscribed=left, list_title=row.title
        )

    def ping(self) -> None:
        """Raise if the database cannot answer a trivial query (the health check)."""
        with self._reading() as connection:
            connection.execute(text("SELECT 1")).scalar_one()
