"""Marking a chunk of a plain invitation whose event has other campaigns; print figures.

A plain invitation (not --new) marks its rows `sending` with one statement that also asks,
for each row's subscriber, about the event's other invitation campaigns (store/ledger.py,
_mark): left the list (skipped), reached there (skipped, ALREADY_INVITED), being sent
there now (deferred, HELD_BACK), else taken. It runs under the event's lock, so its time
caps how fast such a campaign can go.

The store (a SQLite file, or with `--database postgresql` a database of its own on the
local PostgreSQL, MAILER_BENCH_POSTGRES, dropped afterwards) holds a list of `--members`
people and `--others` other lists, each with the people being marked plus 2,000 of their
own; one campaign of the example event to each list, all taken together (every row
queued), the others sending with a live lease. The campaign to the first list claims all
its rows as one batch. Untimed.

Then `--calls` calls of Store.begin_sending of `--chunk` rows each, round robin over:

- taken: the other campaigns have not reached these people: every row taken;
- mixed: a quarter left the list, a quarter reached by one of the others (the last),
  a quarter being sent by one of them now, a quarter taken;
- plain: the taken rows again, the campaign made --new: the marking without the other
  campaigns (the cheapest statement, for the ratio).

Each call's rows go back to `queued` in their batch afterwards (untimed). Printed per
scenario: the median of the marking statement alone (the driver's execute, from
SQLAlchemy's cursor events: the statement with RETURNING) and of the whole call (the
event's lock, the lookup of the other campaigns, commit). Each call's outcome is checked
against the scenario, so a wrong statement is not timed.

It uses the store's public calls only, so another tree's marking (before a change) is
timed by putting its src first: PYTHONPATH=/tmp/before/src .venv/bin/python bench/...

Run: .venv/bin/python bench/bench_marking.py [--database sqlite|postgresql]
     [--members 5000] [--others 24] [--chunk 64] [--calls 41]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench_processes import fresh_database
from sqlalchemy import event, select, update
from sqlalchemy.engine import Engine

from mailer.audience.importer import import_file
from mailer.campaigns import lifecycle
from mailer.clock import utcnow
from mailer.message.event import load_event
from mailer.models import DeliveryStatus, UnsubscribeSource
from mailer.store import Store
from mailer.store.schema import campaigns, deliveries

REPO = Path(__file__).resolve().parent.parent
EVENT = REPO / "templates" / "events" / "london-public-meeting.md"
OWN_PER_OTHER_LIST = 2000
OWNER = "bench:marking"
LEASE = timedelta(days=1)


class MarkingClock:
    """The driver's execute time of the last statement with RETURNING (the marking: the
    only one begin_sending runs), from SQLAlchemy's cursor events."""

    def __init__(self) -> None:
        self.last = 0.0
        self._started = 0.0

    def install(self) -> None:
        event.listen(Engine, "before_cursor_execute", self._before)
        event.listen(Engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self._started = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "RETURNING" in statement:
            self.last = time.perf_counter() - self._started


def import_list(store: Store, tmp: Path, name: str, people: list[int]) -> None:
    path = tmp / f"{name}.csv"
    path.write_text("email\n" + "".join(f"p{p:06d}@example.org\n" for p in people))
    report = import_file(store, path, list_name=name, rejects_path=tmp / f"{name}-rejects.csv")
    assert report.counts.imported == len(people), report.counts


def build(store: Store, tmp: Path, *, members: int, others: int, chunk: int) -> dict[str, Any]:
    """The lists and campaigns (see the docstring); what the calls need."""
    marked = list(range(2 * chunk))  # `taken` the first chunk, `mixed` the second
    import_list(store, tmp, "main", list(range(members)))
    for n in range(others):
        own = range(members + n * OWN_PER_OTHER_LIST, members + (n + 1) * OWN_PER_OTHER_LIST)
        import_list(store, tmp, f"other{n:02d}", marked + list(own))
    event = load_event(EVENT)
    made = []
    for name in ["main"] + [f"other{n:02d}" for n in range(others)]:
        plan = lifecycle.plan_send(store, event=event, list_name=name, new=False)
        campaign = lifecycle.start_send(store, plan, event=event, event_path=EVENT, owner=None)
        assert store.snapshot_audience(campaign.id, plan.list_id)
        made.append(campaign.id)
    main, *rest = made
    list_id = store.list_id("main")
    assert store.claim_campaign(main, owner=OWNER, lease=LEASE)
    claim = store.claim_batch(main, owner=OWNER, lease=LEASE, limit=members)
    assert claim is not None
    assert len(claim.rows) == members

    def row_ids(campaign_id: int, people: list[int]) -> list[int]:
        emails = [f"p{p:06d}@example.org" for p in people]
        with store.engine.connect() as connection:
            return list(
                connection.execute(
                    select(deliveries.c.id)
                    .where(deliveries.c.campaign_id == campaign_id, deliveries.c.email.in_(emails))
                    .order_by(deliveries.c.id)
                ).scalars()
            )

    quarter = chunk // 4
    mixed = marked[chunk:]
    left, reached, going = (
        mixed[:quarter],
        mixed[quarter : 2 * quarter],
        mixed[2 * quarter : 3 * quarter],
    )
    for person in left:
        subscriber = store.get_subscriber_id(f"p{person:06d}@example.org")
        store.unsubscribe(subscriber, list_id, source=UnsubscribeSource.ONE_CLICK)
    there = {
        DeliveryStatus.SENT: row_ids(rest[-1], reached),
        DeliveryStatus.SENDING: row_ids(rest[-1], going),
    }
    with store.engine.begin() as connection:
        connection.execute(  # the others sending now, their leases alive
            update(campaigns)
            .where(campaigns.c.id.in_(rest))
            .values(lease_owner="bench:elsewhere", lease_expires_at=utcnow() + LEASE)
        )
        for status, ids in there.items():
            connection.execute(
                update(deliveries).where(deliveries.c.id.in_(ids)).values(status=status.value)
            )
    store.refresh_statistics("campaigns", "deliveries", "subscribers", changed=1_000_000)
    return {
        "campaign": main,
        "list": list_id,
        "batch": claim.batch,
        "taken": row_ids(main, marked[:chunk]),
        "mixed": row_ids(main, mixed),
        # (taken, skipped) expected of `mixed`; the rest are held back
        "mixed_outcome": (chunk - 3 * quarter, 2 * quarter),
    }


def reset(store: Store, ids: list[int], batch: int) -> None:
    with store.engine.begin() as connection:
        connection.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(ids))
            .values(status="queued", batch_id=batch, last_reply=None, next_attempt_at=None)
        )


def set_mail_again(store: Store, campaign_id: int, value: int) -> None:
    with store.engine.begin() as connection:
        connection.execute(
            update(campaigns).where(campaigns.c.id == campaign_id).values(mail_again=value)
        )


def run(database: str, *, members: int, others: int, chunk: int, calls: int) -> None:
    with tempfile.TemporaryDirectory() as tmp_name, fresh_database(database, Path(tmp_name)) as url:
        tmp = Path(tmp_name)
        store = Store.open(url)
        setup_started = time.perf_counter()
        made = build(store, tmp, members=members, others=others, chunk=chunk)
        setup = time.perf_counter() - setup_started
        store.close()
        leave_out = Store.open(url)  # each Store remembers whether a campaign leaves out
        plain = Store.open(url)
        clock = MarkingClock()
        clock.install()
        scenarios = {
            "taken": (leave_out, made["taken"], (chunk, 0)),
            "mixed": (leave_out, made["mixed"], made["mixed_outcome"]),
            "plain": (plain, made["taken"], (chunk, 0)),
        }
        times: dict[str, tuple[list[float], list[float]]] = {s: ([], []) for s in scenarios}
        set_mail_again(leave_out, made["campaign"], 0)
        leave_out.begin_sending(made["campaign"], made["list"], [0], owner=OWNER)  # remembered
        set_mail_again(plain, made["campaign"], 1)
        plain.begin_sending(made["campaign"], made["list"], [0], owner=OWNER)
        set_mail_again(plain, made["campaign"], 0)
        for call in range(calls + 3):  # three to warm up
            for name, (store, ids, expected) in scenarios.items():
                started = time.perf_counter()
                marked = store.begin_sending(
                    made["campaign"], made["list"], ids, owner=OWNER, batch=made["batch"]
                )
                whole = time.perf_counter() - started
                assert marked is not None, "the batch was not held"
                got = (len(marked[0]), len(marked[1]))
                assert got == expected, f"{name}: {got} taken, skipped; expected {expected}"
                reset(store, ids, made["batch"])
                if call >= 3:
                    times[name][0].append(clock.last)
                    times[name][1].append(whole)
        leave_out.close()
        plain.close()
    print(
        f"{database}: {members:,} members, {others} other campaigns, {chunk} rows a call, "
        f"{calls} calls each (setup {setup:.1f} s)"
    )
    plain_statement = statistics.median(times["plain"][0])
    for name, (statements, calls_) in times.items():
        statement, call_ = statistics.median(statements), statistics.median(calls_)
        print(
            f"  {name:6} statement {statement * 1000:7.2f} ms  "
            f"({statement / plain_statement:4.1f} x plain)  "
            f"whole call {call_ * 1000:7.2f} ms  -> {chunk / call_:8,.0f} rows/s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--members", type=int, default=5000)
    parser.add_argument("--others", type=int, default=24)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--calls", type=int, default=41)
    args = parser.parse_args()
    if args.chunk % 4 or args.chunk < 4:
        sys.exit("--chunk: a multiple of 4")
    run(
        args.database,
        members=args.members,
        others=args.others,
        chunk=args.chunk,
        calls=args.calls,
    )


if __name__ == "__main__":
    main()
