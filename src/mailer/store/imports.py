"""Importing subscribers into a list: one transaction, batched, duplicates merged.

Counts: `imported` (new to the list), `updated` (on the list, details changed), `unchanged`,
`duplicates` (the address appeared earlier in the same file; merged into that row, and each
one reported to the caller with its line and the earlier values it replaced, never merged
silently),
`suppressed` (unsubscribed, bounced or complained: never re-added by an import).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update

from mailer.clock import utcnow
from mailer.models import ImportCounts, Subscriber, SubscriberStatus
from mailer.store.base import StoreBase, executemany_in_driver
from mailer.store.schema import imports, memberships, subscribers, suppressions

_BATCH = 2000


@dataclass(frozen=True, slots=True)
class ImportRow:
    subscriber: Subscriber
    smtputf8: bool = False
    line: int | None = None
    """Where the row is in its file, for the organiser."""


@dataclass(frozen=True, slots=True)
class Replaced:
    """A value a later row of the same address put in place of an earlier, different one."""

    field: str
    """`name`, or the attribute's column."""
    old: str
    new: str


DuplicateCallback = Callable[[ImportRow, "int | None", "tuple[Replaced, ...]"], None]
"""Told of each row merged into an earlier one of the same file: the row, the line of the
row it was merged into when known (within the last 2,000 rows), else None, and the values
it replaced (empty when it only repeated or added to what the earlier rows gave)."""


def _batches(rows: Iterable[ImportRow], size: int) -> Iterator[list[ImportRow]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch


def _replaced(name: str, attrs: dict[str, Any], new: Subscriber) -> tuple[Replaced, ...]:
    """What merging `new` changes: each non-empty value of it over a different non-empty
    one (an empty cell changes nothing; see _merge)."""
    found = [Replaced("name", name, new.name)] if name and new.name and new.name != name else []
    found += [
        Replaced(key, str(attrs[key]), value)
        for key, value in new.attributes.items()
        if value and attrs.get(key) and attrs[key] != value
    ]
    return tuple(found)


def _merge(old_name: str, old_attrs: dict[str, Any], new: Subscriber) -> tuple[str, dict[str, Any]]:
    """Later non-empty values win; empty cells never erase what we already know."""
    name = new.name or old_name
    attrs = dict(old_attrs)
    attrs.update({k: v for k, v in new.attributes.items() if v})
    for key, value in new.attributes.items():
        attrs.setdefault(key, value)
    return name, attrs


class ImportQueries(StoreBase):
    def import_subscribers(
        self,
        list_name: str,
        rows: Iterable[ImportRow],
        *,
        source: str,
        invalid: Iterable[Any] = (),
        on_duplicate: DuplicateCallback | None = None,
    ) -> ImportCounts:
        """Add or update `rows` on `list_name` in ONE transaction: interrupted, nothing changes.

        `rows` is consumed lazily, so a million-row file never sits in memory. `invalid` is
        not read here; the caller counts rejects (kept separate to keep this SQL-only).
        """
        counts = ImportCounts()
        now = utcnow()
        with self.engine.begin() as connection:
            list_id = self.ensure_list(connection, list_name)
            import_id = connection.execute(
                insert(imports)
                .values(list_id=list_id, source=source, started_at=now)
                .returning(imports.c.id)
            ).scalar_one()
            for batch in _batches(rows, _BATCH):
                self._import_batch(connection, list_id, import_id, batch, counts, on_duplicate)
            connection.execute(
                update(imports)
                .where(imports.c.id == import_id)
                .values(finished_at=utcnow(), counts=counts.as_dict())
            )
        self.refresh_statistics(
            "subscribers", "memberships", changed=counts.imported + counts.updated
        )
        return counts

    def _import_batch(
        self,
        connection: Connection,
        list_id: int,
        import_id: int,
        batch: list[ImportRow],
        counts: ImportCounts,
        on_duplicate: DuplicateCallback | None = None,
    ) -> None:
        now = utcnow()
        # Duplicates inside the batch merge into the first occurrence.
        merged: dict[str, tuple[str, str, dict[str, Any], bool]] = {}
        first: dict[str, ImportRow] = {}
        repeats: dict[str, list[ImportRow]] = {}
        for row in batch:
            sub = row.subscriber
            key = sub.email.casefold()
            if key in merged:
                counts.duplicates += 1
                email, name, attrs, utf8 = merged[key]
                name, attrs = _merge(name, attrs, sub)
                merged[key] = (email, name, attrs, utf8)
                repeats.setdefault(key, []).append(row)
            else:
                merged[key] = (sub.email, sub.name, dict(sub.attributes), row.smtputf8)
                first[key] = row
        keys = list(merged)
        # Expanding parameters: the statement is compiled once and cached, instead of
        # compiling 2,000 separate binds for every batch.
        existing = {
            r.email_key: r
            for r in connection.execute(
                select(
                    subscribers.c.id,
                    subscribers.c.email_key,
                    subscribers.c.name,
                    subscribers.c.attributes,
                    subscribers.c.status,
                ).where(subscribers.c.email_key.in_(bindparam("b_keys", expanding=True))),
                {"b_keys": keys},
            )
        }
        suppressed = set(
            connection.execute(
                select(suppressions.c.email_key).where(
                    suppressions.c.email_key.in_(bindparam("b_keys", expanding=True)),
                    suppressions.c.lifted_at.is_(None),
                    (suppressions.c.list_id.is_(None)) | (suppressions.c.list_id == list_id),
                ),
                {"b_keys": keys},
            ).scalars()
        )
        ids = [r.id for r in existing.values()]
        member = {
            r.subscriber_id: r
            for r in connection.execute(
                select(
                    memberships.c.subscriber_id, memberships.c.status, memberships.c.last_import_id
                ).where(memberships.c.list_id == list_id, memberships.c.subscriber_id.in_(ids))
            )
        }
        new_subscribers: list[dict[str, Any]] = []
        changed_subscribers: list[dict[str, Any]] = []
        new_members: list[int] = []
        touched_members: list[int] = []
        duplicates: list[tuple[ImportRow, int | None, tuple[Replaced, ...]]] = []
        for key, (email, name, attrs, utf8) in merged.items():
            old = existing.get(key)
            membership = member.get(old.id) if old is not None else None
            # A row of an earlier batch had this address: this batch's rows of it are all
            # merged into that one, whose line is no longer known here.
            earlier = membership is not None and membership.last_import_id == import_id
            if key in repeats or earlier:
                duplicates.extend(_merged_rows(first[key], repeats.get(key, []), old, earlier))
            if (
                key in suppressed
                or (old is not None and old.status != SubscriberStatus.SUBSCRIBED.value)
                or (membership is not None and membership.status != SubscriberStatus.SUBSCRIBED)
            ):
                counts.suppressed += 1
                continue
            if old is None:
                new_subscribers.append(
                    {
                        "email": email,
                        "email_key": key,
                        "name": name,
                        "attributes": attrs,
                        "smtputf8": int(utf8),
                    }
                )
                counts.imported += 1
                continue
            new_name, new_attrs = _merge(
                old.name, old.attributes or {}, _as_subscriber(email, name, attrs)
            )
            differs = new_name != old.name or new_attrs != (old.attributes or {})
            if differs:
                changed_subscribers.append(
                    {"b_id": old.id, "b_name": new_name, "b_attrs": new_attrs, "b_now": now}
                )
            if membership is None:
                new_members.append(old.id)
                counts.imported += 1
            else:
                touched_members.append(old.id)
                if membership.last_import_id == import_id:
                    counts.duplicates += 1
                elif differs:
                    counts.updated += 1
                else:
                    counts.unchanged += 1
        if on_duplicate is not None:
            for row, into, replaced in sorted(duplicates, key=lambda d: d[0].line or 0):
                on_duplicate(row, into, replaced)
        if new_subscribers:
            # Plain executemany, then one SELECT for the ids: RETURNING with ordered rows
            # makes SQLAlchemy fall back to one INSERT per row on SQLite.
            executemany_in_driver(
                connection,
                insert(subscribers).values(
                    email=bindparam("email"),
                    email_key=bindparam("email_key"),
                    name=bindparam("name"),
                    attributes=bindparam("attributes"),
                    smtputf8=bindparam("smtputf8"),
                    status=SubscriberStatus.SUBSCRIBED.value,
                    created_at=func.current_timestamp(),
                    updated_at=func.current_timestamp(),
                ),
                [{**row, "attributes": json.dumps(row["attributes"])} for row in new_subscribers],
            )
            new_keys = [row["email_key"] for row in new_subscribers]
            new_members.extend(
                connection.execute(
                    select(subscribers.c.id).where(
                        subscribers.c.email_key.in_(bindparam("b_keys", expanding=True))
                    ),
                    {"b_keys": new_keys},
                ).scalars()
            )
        if changed_subscribers:
            connection.execute(
                update(subscribers)
                .where(subscribers.c.id == bindparam("b_id"))
                .values(
                    name=bindparam("b_name"),
                    attributes=bindparam("b_attrs"),
                    updated_at=bindparam("b_now"),
                ),
                changed_subscribers,
            )
        if new_members:
            executemany_in_driver(
                connection,
                insert(memberships).values(
                    list_id=list_id,
                    subscriber_id=bindparam("b_subscriber"),
                    status=SubscriberStatus.SUBSCRIBED.value,
                    last_import_id=import_id,
                    created_at=func.current_timestamp(),
                    updated_at=func.current_timestamp(),
                ),
                [{"b_subscriber": sid} for sid in new_members],
            )
        if touched_members:
            connection.execute(
                update(memberships)
                .where(
                    memberships.c.list_id == list_id,
                    memberships.c.subscriber_id.in_(touched_members),
                )
                .values(last_import_id=import_id)
            )


def _merged_rows(
    first: ImportRow, repeats: list[ImportRow], stored: Any, earlier: bool
) -> Iterator[tuple[ImportRow, int | None, tuple[Replaced, ...]]]:
    """One address's merged rows of this batch, each with the line it went into and the
    values it replaced, in file order. With `earlier` the first row too is merged, into
    what an earlier batch stored (`stored`); else the repeats go into the first row."""
    if earlier:
        into, rows = None, [first, *repeats]
        name, attrs = str(stored.name), dict(stored.attributes or {})
    else:
        into, rows = first.line, repeats
        name, attrs = first.subscriber.name, dict(first.subscriber.attributes)
    for row in rows:
        yield row, into, _replaced(name, attrs, row.subscriber)
        name, attrs = _merge(name, attrs, row.subscriber)


def _as_subscriber(email: str, name: str, attrs: dict[str, Any]) -> Subscriber:
    return Subscriber(email=email, name=name, attributes=attrs)
