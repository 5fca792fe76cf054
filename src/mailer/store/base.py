"""What every query mixin may assume about the Store it is mixed into."""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.types import TypeEngine

from mailer.addresses import InvalidAddress, normalise
from mailer.clock import utcnow
from mailer.errors import NotFoundError, one_line_reason
from mailer.logs import fields
from mailer.models import SubscriberStatus
from mailer.store.schema import lists, memberships, subscribers


def executemany_in_driver(
    connection: Connection, statement: UpdateBase, rows: list[dict[str, Any]]
) -> None:
    """Run `statement` once per row through the driver's own executemany.

    SQLAlchemy's per-row parameter processing costs about as much as SQLite's insert itself;
    on a million-row import that is the difference between ~20k and ~30k rows/s, and it
    was half the cost of recording a sender's outcomes. The statement is still compiled
    by SQLAlchemy for this dialect; the caller passes values the driver takes as they
    are (str, int, None: JSON already serialised, datetimes through `driver_values`).
    Values the statement fixes for the whole batch are taken from the compiled parameters.
    """
    if not rows:
        return
    compiled = statement.compile(dialect=connection.dialect)
    # What SQLAlchemy's own path would refuse, checked on the first row (the rows are made
    # alike): a missing value (here it would become NULL) or an unconverted datetime (the
    # driver would store its own format, which compares wrongly with SQLAlchemy's).
    required = {name for name, bind in compiled.binds.items() if bind.required}
    if missing := required - rows[0].keys():
        raise ValueError(f"no value for {', '.join(sorted(missing))}")
    if any(isinstance(value, datetime) for value in rows[0].values()):
        raise TypeError("a datetime must go through driver_values() first")
    fixed = compiled.params
    order = compiled.positiontup
    if order is not None:  # qmark / numeric paramstyles (SQLite)
        values_of = operator.itemgetter(*order)
        params: list[Any] = [values_of(fixed | row) for row in rows]
    else:  # named paramstyles (psycopg)
        params = [{**fixed, **row} for row in rows]
    connection.exec_driver_sql(str(compiled), params)


def driver_values(connection: Connection, kind: TypeEngine[Any]) -> Callable[[Any], Any]:
    """What turns a value into what SQLAlchemy would hand this connection's driver for a
    column of type `kind` (SQLite's DATETIME: a string in its own format; None stays
    None), for executemany_in_driver."""
    processor = kind.dialect_impl(connection.dialect).bind_processor(connection.dialect)
    if processor is None:
        return unchanged
    return lambda value: None if value is None else processor(value)


def unchanged(value: Any) -> Any:
    return value


def email_key(email: str) -> str:
    """How an address typed by the organiser is looked up: normalised as the import does
    (so `Zoe@Bücher.de` finds `zoe@xn--bcher-kva.de`), else trimmed and case-folded."""
    try:
        return normalise(email).key
    except InvalidAddress:
        return email.strip().casefold()


def set_membership_status(
    connection: Connection,
    subscriber_id: int,
    list_id: int,
    *,
    to: SubscriberStatus,
    now: datetime,
) -> bool:
    """Move one membership to `to` from the other state; True if it changed."""
    start = (
        SubscriberStatus.SUBSCRIBED
        if to is SubscriberStatus.UNSUBSCRIBED
        else SubscriberStatus.UNSUBSCRIBED
    )
    changed = connection.execute(
        update(memberships)
        .where(
            memberships.c.subscriber_id == subscriber_id,
            memberships.c.list_id == list_id,
            memberships.c.status == start.value,
        )
        .values(status=to.value, updated_at=now)
    ).rowcount
    return bool(changed)


log = logging.getLogger("mailer.store")

# Fewer changed rows than this leave statistics to autovacuum: a planner's guess about a
# few hundred rows costs little, and every small import would pay for an ANALYZE.
_ANALYZE_AFTER = 1000


class StoreBase:
    engine: Engine

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A connection for reads. On PostgreSQL in autocommit: each statement sees what
        was committed before it began, as it would inside a READ COMMITTED transaction
        (PostgreSQL's default, the store's), and the connection goes back to the pool
        without a ROLLBACK. psycopg forgets every statement it has prepared at a ROLLBACK
        (and sends DEALLOCATE ALL), so the read a sender makes every second (its
        campaign's status) kept its claims, markings and records from ever being prepared
        and planned once: they were parsed and planned at every call (bench/README,
        thirteenth session). A statement that writes through it is atomic on its own
        and with nothing else (the marking and the recording are single statements, see
        LedgerQueries._one_statement); writes that belong together go through
        engine.begin(). On SQLite a plain connection, as before."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            ) as connection:
                yield connection
        else:
            with self.engine.connect() as connection:
                yield connection

    def refresh_statistics(self, *tables: str, changed: int) -> None:
        """After a bulk change (an import, a campaign's audience snapshot) of `changed`
        rows, have PostgreSQL sample `tables` again at once, rather than when autovacuum
        gets to them. Until then the planner guesses: measured on a list imported and sent
        at once, the check that marks 16 rows `sending` scanned the list's memberships for
        every row (75 ms a call instead of 0.6 ms; 200 million rows read for a campaign of
        20,000). ANALYZE reads a sample (~30,000 rows a table), about a second at most.
        SQLite's planner needs no statistics for these queries: nothing is done there."""
        if self.engine.dialect.name != "postgresql" or changed < _ANALYZE_AFTER:
            return
        # Each table on its own, in autocommit and one fixed order, with a lock timeout:
        # within one transaction ANALYZE keeps every table's lock to the end, and an
        # import and a snapshot analysing the same tables in another order deadlocked.
        # Only an optimisation: a failure is logged, never the caller's error.
        try:
            with self._reading() as connection:  # autocommit on PostgreSQL
                # A session setting (SET LOCAL needs a transaction): reset whatever
                # happens, or the pooled connection would keep failing any lock wait
                # over 2 s (an event's advisory lock, a row lock) after one timed out here.
                connection.exec_driver_sql("SET lock_timeout = '2s'")
                try:
                    for table in sorted(tables):
                        connection.exec_driver_sql(f"ANALYZE {table}")
                finally:
                    connection.exec_driver_sql("RESET lock_timeout")
        except SQLAlchemyError as exc:
            log.warning(
                fields(event="analyze-failed", tables=",".join(tables), error=one_line_reason(exc))
            )

    def _subscriber_row(self, email: str, *columns: Any) -> Any:
        """The subscriber with this address (all columns, or `columns`); NotFoundError."""
        query = select(*columns) if columns else select(subscribers)
        with self._reading() as connection:
            row = connection.execute(
                query.where(subscribers.c.email_key == email_key(email))
            ).first()
        if row is None:
            raise NotFoundError(f"no subscriber {email!r}")
        return row

    def _list_id(self, connection: Connection, name: str) -> int:
        live = lists.c.deleted_at.is_(None)
        found = connection.execute(select(lists.c.id).where(lists.c.name == name, live)).scalar()
        if found is None:
            names = connection.execute(
                select(lists.c.name).where(live).order_by(lists.c.name)
            ).scalars()
            known = ", ".join(names) or "none yet"
            raise NotFoundError(
                f"no list named {name!r} (lists: {known})",
                hint="Import subscribers with `mailer subscribers import FILE --list NAME`.",
            )
        return int(found)

    def ensure_list(self, connection: Connection, name: str) -> int:
        found = connection.execute(select(lists.c.id).where(lists.c.name == name)).scalar()
        if found is not None:
            # A deleted list of this name comes back, with the unsubscribes it kept.
            connection.execute(update(lists).where(lists.c.id == found).values(deleted_at=None))
            return int(found)
        result = connection.execute(
            insert(lists).values(name=name, created_at=utcnow()).returning(lists.c.id)
        )
        return int(result.scalar_one())
