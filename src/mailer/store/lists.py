"""Lists and subscribers: creating, describing, reading, counting, exporting, removing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sqlalchemy import (
    ColumnElement,
    Connection,
    RowMapping,
    and_,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from mailer.addresses import InvalidAddress, normalise
from mailer.clock import as_utc, utcnow
from mailer.errors import CampaignError, InputError, NotFoundError, StoreError, UnsafeValueError
from mailer.models import FollowUpAudience, ListSummary, Subscriber, SubscriberStatus
from mailer.safety import ensure_header_safe, find_unsafe, tidy_text
from mailer.store.base import StoreBase
from mailer.store.campaigns import UNFINISHED
from mailer.store.schema import campaigns, lists, memberships, subscribers, suppressions

if TYPE_CHECKING:
    from mailer.store.ledger import SameEvent

_EXPORT_BATCH = 1000
MAX_NAME = 200
MAX_TITLE = 200
MAX_DESCRIPTION = 2000


def checked_list_name(name: str) -> str:
    """A list's name as typed: trimmed, not empty, one line (it makes the List-Id)."""
    name = name.strip()
    if not name:
        raise InputError("a list's name cannot be empty")
    return _header_text(name, what="list name", limit=MAX_NAME)


def checked_title(title: str) -> str:
    """A public title: one line that may reach a header (List-Id) and the footer."""
    title = title.strip()
    if not title:
        raise InputError(
            "a list's title cannot be empty", hint="Recipients read it: 'Members of ...'."
        )
    return _header_text(title, what="title", limit=MAX_TITLE)


def checked_description(description: str) -> str:
    """A description: several lines allowed, no other control characters."""
    description = description.strip()
    problem = find_unsafe(description.replace("\n", " ").replace("\t", " "))
    if problem is not None:
        raise InputError(f"description: {problem} is not allowed")
    if len(description) > MAX_DESCRIPTION:
        raise InputError(
            f"description: {len(description)} characters is longer than the "
            f"{MAX_DESCRIPTION} allowed"
        )
    return description


def _header_text(value: str, *, what: str, limit: int) -> str:
    try:
        return ensure_header_safe(value, field=what, max_length=limit)
    except UnsafeValueError as exc:
        raise InputError(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class ListChange:
    """What creating or deleting a list did, for the organiser to read."""

    name: str
    revived: bool = False
    """Created again under the name of a deleted list: its unsubscribes apply again."""
    members: int = 0
    """Deleted: memberships taken off."""
    suppressions: int = 0
    """Unsubscribes from this list in force, kept."""


def subscriber_from_row(row: RowMapping) -> Subscriber:
    """A `subscribers` row, read by column name (a query may add columns of its own)."""
    return Subscriber(
        id=int(row["id"]),
        email=str(row["email"]),
        name=str(row["name"]),
        attributes=dict(row["attributes"] or {}),
        status=SubscriberStatus(row["status"]),
    )


class ListQueries(StoreBase):
    def list_id(self, name: str) -> int:
        with self._reading() as connection:
            return self._list_id(connection, name)

    def list_name(self, list_id: int) -> str:
        with self._reading() as connection:
            name = connection.execute(select(lists.c.name).where(lists.c.id == list_id)).scalar()
        if name is None:
            raise NotFoundError(f"no list with id {list_id}")
        return str(name)

    def lists(self, name: str | None = None) -> list[ListSummary]:
        """Every list (or the one named), with counts; deleted lists are not shown."""
        both_subscribed = (memberships.c.status == SubscriberStatus.SUBSCRIBED.value) & (
            subscribers.c.status == SubscriberStatus.SUBSCRIBED.value
        )
        active = func.sum(case((both_subscribed, 1), else_=0))
        query = (
            select(
                lists.c.name,
                lists.c.created_at,
                lists.c.title,
                lists.c.description,
                func.count(memberships.c.subscriber_id),
                active,
            )
            .select_from(
                lists.outerjoin(memberships, memberships.c.list_id == lists.c.id).outerjoin(
                    subscribers, subscribers.c.id == memberships.c.subscriber_id
                )
            )
            .where(lists.c.deleted_at.is_(None))
            .group_by(
                lists.c.id, lists.c.name, lists.c.created_at, lists.c.title, lists.c.description
            )
            .order_by(lists.c.name)
        )
        if name is not None:
            query = query.where(lists.c.name == name)
        with self._reading() as connection:
            rows = connection.execute(query).all()
            if name is not None and not rows:
                self._list_id(connection, name)  # raises NotFoundError naming the lists
        return [
            ListSummary(
                name=name,
                subscribed=int(subscribed or 0),
                unsubscribed=int(total) - int(subscribed or 0),
                created_at=as_utc(created_at) or created_at,
                title=title,
                description=description,
            )
            for name, created_at, title, description, total, subscribed in rows
        ]

    def list_title(self, name: str) -> str | None:
        """What recipients read as the list's name, if it has a title."""
        with self._reading() as connection:
            list_id = self._list_id(connection, name)
            title = connection.execute(select(lists.c.title).where(lists.c.id == list_id))
            return title.scalar()

    def create_list(self, name: str, *, title: str, description: str | None = None) -> ListChange:
        """A new, empty list. The name of a deleted list brings its row back, so whoever
        unsubscribed from it stays off it; a list that exists is an error."""
        name = checked_list_name(name)
        values = {
            "title": checked_title(title),
            "description": checked_description(description) if description else None,
        }
        with self.engine.begin() as connection:
            row = connection.execute(
                select(lists.c.id, lists.c.deleted_at).where(lists.c.name == name)
            ).first()
            if row is None:
                connection.execute(insert(lists).values(name=name, created_at=utcnow(), **values))
                return ListChange(name)
            if row.deleted_at is None:
                raise StoreError(
                    f"list {name!r} already exists",
                    hint=f"Change its title with `mailer lists describe {name} --title ...`.",
                )
            connection.execute(
                update(lists).where(lists.c.id == row.id).values(deleted_at=None, **values)
            )
            return ListChange(
                name, revived=True, suppressions=_list_suppressions(connection, row.id)
            )

    def describe_list(
        self, name: str, *, title: str | None = None, description: str | None = None
    ) -> None:
        """Change the title and/or the description (an empty description removes it)."""
        values: dict[str, str | None] = {}
        if title is not None:
            values["title"] = checked_title(title)
        if description is not None:
            values["description"] = checked_description(description) or None
        if not values:
            raise InputError("nothing to change", hint="Give --title and/or --description.")
        with self.engine.begin() as connection:
            list_id = self._list_id(connection, name)
            connection.execute(update(lists).where(lists.c.id == list_id).values(**values))

    def rename_list(self, old: str, new: str) -> None:
        """A new name for the organiser (and List-Id); unsubscribe links keep working, since
        they name the list by id."""
        new = checked_list_name(new)
        with self.engine.begin() as connection:
            list_id = self._list_id(connection, old)
            taken = connection.execute(
                select(lists.c.deleted_at).where(lists.c.name == new, lists.c.id != list_id)
            ).first()
            if taken is not None:
                why = (
                    "a deleted list keeps that name with its unsubscribes"
                    if taken.deleted_at is not None
                    else "that list exists"
                )
                raise StoreError(f"cannot rename {old!r} to {new!r}: {why}")
            connection.execute(update(lists).where(lists.c.id == list_id).values(name=new))

    def delete_list(self, name: str) -> ListChange:
        """Take everyone off the list and hide it. Its unsubscribes, its campaigns and their
        reports stay; refused while a campaign to it is not finished."""
        with self.engine.begin() as connection:
            list_id = self._list_id(connection, name)
            busy = connection.execute(
                select(campaigns.c.id, campaigns.c.status)
                .where(
                    campaigns.c.list_id == list_id,
                    campaigns.c.status.in_([status.value for status in UNFINISHED]),
                )
                .order_by(campaigns.c.id)
            ).first()
            if busy is not None:
                raise CampaignError(
                    f"list {name!r} is used by campaign {busy.id}, which is {busy.status}",
                    campaign_id=busy.id,
                    hint=f"Let it finish, or `mailer campaign cancel {busy.id}`, first.",
                )
            members = connection.execute(
                delete(memberships).where(memberships.c.list_id == list_id)
            ).rowcount
            connection.execute(
                update(lists).where(lists.c.id == list_id).values(deleted_at=utcnow())
            )
            return ListChange(
                name, members=int(members), suppressions=_list_suppressions(connection, list_id)
            )

    def add_subscriber(self, email: str, list_name: str, *, name: str = "") -> bool:
        """Put one address on a list; True if it was not on it. Someone who unsubscribed,
        bounced or complained is refused, as an import skips them: only
        `subscribers resubscribe`, with a reason, lifts that."""
        try:
            address = normalise(email)
        except InvalidAddress as exc:
            raise InputError(f"{email!r} is not a valid address: {exc}") from exc
        name = _header_text(tidy_text(name), what="name", limit=1000)
        now = utcnow()
        with self.engine.begin() as connection:
            list_id = self._list_id(connection, list_name)
            existing = connection.execute(
                select(subscribers.c.id, subscribers.c.status, subscribers.c.name).where(
                    subscribers.c.email_key == address.key
                )
            ).first()
            membership = None
            if existing is not None:
                membership = connection.execute(
                    select(memberships.c.status).where(
                        memberships.c.list_id == list_id,
                        memberships.c.subscriber_id == existing.id,
                    )
                ).scalar()
            blocked = connection.execute(
                select(suppressions.c.reason, suppressions.c.list_id, suppressions.c.created_at)
                .where(
                    suppressions.c.email_key == address.key,
                    suppressions.c.lifted_at.is_(None),
                    or_(suppressions.c.list_id.is_(None), suppressions.c.list_id == list_id),
                )
                .order_by(suppressions.c.created_at)
            ).first()
            if blocked is not None:
                where = "every list" if blocked.list_id is None else repr(list_name)
                what = {"unsubscribed": f"unsubscribed from {where}"}.get(
                    blocked.reason, f"{blocked.reason} (off {where})"
                )
                left = f"{what} on {as_utc(blocked.created_at):%Y-%m-%d}"
            elif existing is not None and existing.status != SubscriberStatus.SUBSCRIBED:
                left = f"is {existing.status} (off every list)"
            elif membership == SubscriberStatus.UNSUBSCRIBED:
                left = f"unsubscribed from {list_name!r}"
            else:
                left = None
            if left is not None:
                raise StoreError(
                    f"{address.email} {left}; not added",
                    hint=f"`mailer subscribers show {address.email}` says how; if they asked "
                    f"to be back: `mailer subscribers resubscribe {address.email} --list "
                    f"{list_name} --reason ...`.",
                )
            if existing is None:
                subscriber_id = connection.execute(
                    insert(subscribers)
                    .values(
                        email=address.email,
                        email_key=address.key,
                        name=name,
                        attributes={},
                        status=SubscriberStatus.SUBSCRIBED.value,
                        smtputf8=int(address.smtputf8),
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(subscribers.c.id)
                ).scalar_one()
            else:
                subscriber_id = existing.id
                if name and name != existing.name:
                    connection.execute(
                        update(subscribers)
                        .where(subscribers.c.id == subscriber_id)
                        .values(name=name, updated_at=now)
                    )
            if membership is not None:
                return False
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

    def iter_audience(
        self,
        list_name: str,
        *,
        not_invited_to: SameEvent | None = None,
        follow_up: FollowUpAudience | None = None,
    ) -> Iterator[Subscriber]:
        """Whom a new campaign to this list would take now, as its snapshot would: its
        mailable members (no suppression in force), less those who had the event's
        invitation elsewhere (`not_invited_to`), or a follow-up's answers (`follow_up`).
        What a dry run renders."""
        from mailer.store.ledger import invited_elsewhere, mailable
        from mailer.store.rsvps import follow_up_condition

        with self._reading() as connection:
            list_id = self._list_id(connection, list_name)
        condition = mailable(list_id)
        if not_invited_to is not None:
            condition = and_(condition, ~invited_elsewhere(not_invited_to, None))
        if follow_up is not None:
            condition = and_(condition, follow_up_condition(follow_up))
        return self.iter_subscribers(list_name, only_subscribed=True, where=condition)

    def iter_subscribers(
        self,
        list_name: str | None = None,
        *,
        only_subscribed: bool = False,
        where: ColumnElement[bool] | None = None,
    ) -> Iterator[Subscriber]:
        """Every subscriber (of one list; `where` on subscribers and memberships), by id,
        fetched in pages so memory stays flat."""
        after = 0
        while True:
            with self._reading() as connection:
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
                if where is not None:
                    query = query.where(where)
                rows = connection.execute(
                    query.order_by(subscribers.c.id).limit(_EXPORT_BATCH)
                ).all()
            if not rows:
                return
            for row in rows:
                subscriber = subscriber_from_row(row._mapping)
                # On a list, a list-level unsubscribe is what the organiser needs to see.
                membership = row._mapping.get("membership_status")
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
        with self._reading() as connection:
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
        return subscriber_from_row(self._subscriber_row(email)._mapping)

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


def _list_suppressions(connection: Connection, list_id: int) -> int:
    """Unsubscribes from this list in force (who a list of its name must not mail)."""
    query = (
        select(func.count())
        .select_from(suppressions)
        .where(suppressions.c.list_id == list_id, suppressions.c.lifted_at.is_(None))
    )
    return int(connection.execute(query).scalar_one())
