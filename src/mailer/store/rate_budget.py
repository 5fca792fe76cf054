"""The shared rate (issue 15): one token bucket per budget, held in the database.

Every sender of every machine books its sending slots here, a few at a time, so
MAILER_RATE_LIMIT (and the hourly and daily caps) hold for all of them together. The
bucket is GCRA: `tat` is the theoretical time of the next free slot, in epoch seconds of
the senders' clocks (kept in step by NTP, as the leases already assume). A booking is one
UPDATE ... RETURNING that moves `tat` on by the slots it takes, only if the schedule is not
already booked beyond the caller's horizon; the caps add up slots granted per minute.

Both databases serialise bookings on the budget's row (PostgreSQL's row lock; SQLite's
write lock, taken by the first statement), so the caps are read and written under it.

The per-minute counts are the one record of what a budget took: a restarted sender, or
another machine, reads them, nothing is kept per process. Budgets are "global" (every
message) and "relay:NAME" (one MAILER_RELAYS relay, its rate and daily cap). A capped
budget with nothing counted in the last day (new, or caps only just set) is first seeded
from the ledger's messages sent in that day (of that relay, for a relay's budget).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from mailer.clock import as_utc
from mailer.models import DeliveryStatus
from mailer.store.base import StoreBase
from mailer.store.schema import deliveries, rate_budgets, rate_counts

# (cap name, window in minutes): the hourly and daily caps, counted per minute.
_WINDOWS = (("hourly", 60), ("daily", 1440))
_DAY = 1440  # minutes: counts older than the longest window are no longer needed

# The budget names the senders use (sending.shared_rate.GLOBAL_BUDGET, sending.relays.
# relay_budget): the ledger's messages a budget's caps are seeded from depend on them.
_GLOBAL_BUDGET = "global"
_RELAY_BUDGET = "relay:"


class RateBudgetQueries(StoreBase):
    def take_rate_slots(
        self,
        budget: str,
        *,
        now: float,
        count: int,
        interval: float,
        burst: int = 1,
        horizon: float = 0.0,
        per_hour: int | None = None,
        per_day: int | None = None,
    ) -> tuple[float, int, float, str | None]:
        """Book up to `count` slots `interval` apart: (first slot, slots granted, when to
        ask again if none were, the cap that withheld them or None).

        Slots are granted while the schedule is booked no further than `now + horizon`;
        up to `burst` slots may lie in the past (credit for idle time)."""
        tolerance = (burst - 1) * interval
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # A booking lost in a server crash costs nothing (the slots go unused), so
                # it need not wait for the WAL flush: ~10 ms less per booking here.
                connection.execute(text("SET LOCAL synchronous_commit TO OFF"))
            self._ensure(connection, budget, now=now)
            greatest = func.greatest if connection.dialect.name == "postgresql" else func.max
            start = greatest(rate_budgets.c.tat, now - tolerance)
            new_tat = connection.execute(
                update(rate_budgets)
                .where(rate_budgets.c.name == budget, start <= now + horizon)
                .values(tat=start + count * interval)
                .returning(rate_budgets.c.tat)
            ).scalar()
            if new_tat is None:
                tat = float(
                    connection.execute(
                        select(rate_budgets.c.tat).where(rate_budgets.c.name == budget)
                    ).scalar_one()
                )
                return 0.0, 0, max(tat, now - tolerance) - horizon, None
            first = float(new_tat) - count * interval
            granted, free_at, cap = self._within_caps(
                connection, budget, now=now, count=count, per_hour=per_hour, per_day=per_day
            )
            if granted < count:  # we still hold the row: hand back what the caps withheld
                connection.execute(
                    update(rate_budgets)
                    .where(rate_budgets.c.name == budget)
                    .values(tat=rate_budgets.c.tat - (count - granted) * interval)
                )
            if granted and (per_hour or per_day):
                self._count(connection, budget, minute=int(now // 60), granted=granted)
            return first, granted, free_at, cap

    def return_rate_slots(
        self, budget: str, *, minute: int, count: int, tat_end: float | None, interval: float
    ) -> None:
        """A sender stops with `count` booked slots unused (the last it booked, ending at
        `tat_end`): the caps get them back, and the schedule too if nobody booked since.
        With `tat_end` None (slots whose time passed unused), the caps only."""
        if count <= 0:
            return
        with self.engine.begin() as connection:
            if tat_end is not None:
                connection.execute(
                    update(rate_budgets)
                    .where(
                        rate_budgets.c.name == budget,
                        # float8 rounding at 1.8e9 s
                        func.abs(rate_budgets.c.tat - tat_end) < 1e-5,
                    )
                    .values(tat=rate_budgets.c.tat - count * interval)
                )
            connection.execute(
                update(rate_counts)
                .where(rate_counts.c.budget == budget, rate_counts.c.minute == minute)
                .values(granted=func.max(rate_counts.c.granted - count, 0))
                if connection.dialect.name == "sqlite"
                else update(rate_counts)
                .where(rate_counts.c.budget == budget, rate_counts.c.minute == minute)
                .values(granted=func.greatest(rate_counts.c.granted - count, 0))
            )

    # -- internals ---------------------------------------------------------------------

    def _within_caps(
        self,
        connection: Connection,
        budget: str,
        *,
        now: float,
        count: int,
        per_hour: int | None,
        per_day: int | None,
    ) -> tuple[int, float, str | None]:
        granted, free_at, cap = count, now, None
        if per_hour is None and per_day is None:
            return granted, free_at, cap
        minute = int(now // 60)
        rows = self._counts(connection, budget, minute=minute)
        if not rows and self._seed(connection, budget, now=now):
            rows = self._counts(connection, budget, minute=minute)
        for (name, span), limit in zip(_WINDOWS, (per_hour, per_day), strict=True):
            if limit is None:
                continue
            in_window = [(m, n) for m, n in rows if m > minute - span]
            room = limit - sum(n for _, n in in_window)
            if room < granted:
                granted, cap = max(room, 0), name
                # room comes back as the oldest counted minute leaves the window
                oldest = next((m for m, n in in_window if n), minute)
                free_at = max(free_at, (oldest + span) * 60.0)
        return granted, free_at, cap

    def _counts(self, connection: Connection, budget: str, *, minute: int) -> list[tuple[int, int]]:
        """(minute, slots granted) over the last day, oldest first."""
        rows = connection.execute(
            select(rate_counts.c.minute, rate_counts.c.granted)
            .where(rate_counts.c.budget == budget, rate_counts.c.minute > minute - _DAY)
            .order_by(rate_counts.c.minute)
        ).all()
        return [(int(r.minute), int(r.granted)) for r in rows]

    def _count(self, connection: Connection, budget: str, *, minute: int, granted: int) -> None:
        statement = _upsert(connection)(rate_counts).values(
            budget=budget, minute=minute, granted=granted
        )
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=[rate_counts.c.budget, rate_counts.c.minute],
                set_={"granted": rate_counts.c.granted + granted},
            )
        )
        # Minutes older than a day are no longer in any window.
        connection.execute(
            rate_counts.delete().where(
                rate_counts.c.budget == budget, rate_counts.c.minute <= minute - _DAY
            )
        )

    def _ensure(self, connection: Connection, budget: str, *, now: float) -> None:
        """The budget's row, made on first use."""
        connection.execute(
            _upsert(connection)(rate_budgets)
            .values(name=budget, tat=now)
            .on_conflict_do_nothing(index_elements=[rate_budgets.c.name])
        )

    def _seed(self, connection: Connection, budget: str, *, now: float) -> bool:
        """Count what the ledger says this budget's messages were in the last day: those
        sent before the budget counted (a new store, a new relay budget, caps just set).
        Called only while nothing is counted in that day, under the budget's row lock, so
        no message is counted twice. True if anything was counted."""
        if budget == _GLOBAL_BUDGET:
            which = []
        elif budget.startswith(_RELAY_BUDGET):
            which = [deliveries.c.relay == budget.removeprefix(_RELAY_BUDGET)]
        else:
            return False
        since = datetime.fromtimestamp(now - _DAY * 60, UTC)
        per_minute: Counter[int] = Counter()
        for stamp in connection.execute(
            select(deliveries.c.sent_at).where(
                deliveries.c.status == DeliveryStatus.SENT.value,
                deliveries.c.sent_at >= since,
                *which,
            )
        ).scalars():
            when = as_utc(stamp)
            if when is not None and when.timestamp() <= now:
                per_minute[int(when.timestamp() // 60)] += 1
        for minute, granted in per_minute.items():
            self._count(connection, budget, minute=minute, granted=granted)
        return bool(per_minute)


def _upsert(connection: Connection) -> Any:
    return postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
