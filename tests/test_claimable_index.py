"""Claims read only the rows still to be sent (ix_deliveries_claimable), and take the right
ones: queued and due retries in id order, unknown rows only when asked, nothing held by
another batch, nothing waiting for a later retry; a row given back can be claimed again."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text, update

from campaign_support import make_settings, new_campaign, seed_list, send
from mailer.models import CampaignStatus, DeliveryCounts, DeliveryStatus
from mailer.sending.engine import Stop, StopReason
from mailer.sending.run import final_state
from mailer.store import Store
from mailer.store.batches import claimable_rows
from mailer.store.schema import deliveries
from smtp_server import SmtpTestServer

LEASE = timedelta(seconds=60)
PAST = datetime(2020, 1, 1, tzinfo=UTC)
FUTURE = datetime(2099, 1, 1, tzinfo=UTC)


def campaign_of(store: Store, tmp_path: Path, count: int) -> tuple[int, list[int]]:
    """A campaign of `count` whose audience is taken: (campaign, row ids in order)."""
    seed_list(store, tmp_path, count)
    campaign_id = new_campaign(store)
    assert store.claim_campaign(campaign_id, owner="host:1", lease=LEASE)
    store.snapshot_audience(campaign_id, store.list_id("members"))
    with store.engine.connect() as connection:
        ids = list(
            connection.execute(
                text("SELECT id FROM deliveries WHERE campaign_id = :c ORDER BY id"),
                {"c": campaign_id},
            ).scalars()
        )
    return campaign_id, ids


def set_rows(
    store: Store, ids: list[int], status: DeliveryStatus, *, retry_at: datetime | None = None
) -> None:
    with store.engine.begin() as connection:
        connection.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(ids))
            .values(status=status.value, next_attempt_at=retry_at)
        )


def plan(store: Store, campaign_id: int) -> str:
    """The database's plan for the claim's row search, as text.

    On PostgreSQL, only among the plans that read rows in id order, as it chooses at
    scale: on a test-sized table it may as well sort a bitmap or the whole table, which a
    million rows would not allow. So the choice tested is between the primary key (every
    row ever sent, read again by each claim) and the claimable index."""
    query = claimable_rows(campaign_id, limit=1000, include_unknown=False)
    # As it is executed: bound parameters stay parameters (SQLite matches a partial
    # index's literals only against literals in the statement).
    compiled = query.compile(store.engine, compile_kwargs={"render_postcompile": True})
    values = compiled.construct_params()
    params: Any = (
        tuple(values[name] for name in compiled.positiontup) if compiled.positiontup else values
    )
    sqlite = store.engine.dialect.name == "sqlite"
    with store.engine.begin() as connection:
        connection.execute(text("ANALYZE"))
        if not sqlite:
            for setting in ("enable_sort", "enable_bitmapscan", "enable_seqscan"):
                connection.execute(text(f"SET LOCAL {setting} = off"))
        explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
        found = connection.exec_driver_sql(explain + str(compiled), params).all()
    return "\n".join(" ".join(str(part) for part in row) for row in found)


def test_the_claim_searches_the_claimable_index_not_the_rows_already_sent(
    store: Store, tmp_path: Path
) -> None:
    """Mid-campaign (most rows sent), the row search goes through the partial index, on
    both databases: through the primary key it read every sent row first, each claim."""
    campaign_id, ids = campaign_of(store, tmp_path, 2000)
    set_rows(store, ids[:1900], DeliveryStatus.SENT)

    assert "ix_deliveries_claimable" in plan(store, campaign_id)


def test_claims_take_due_rows_in_order_and_nothing_else(store: Store, tmp_path: Path) -> None:
    campaign_id, ids = campaign_of(store, tmp_path, 12)
    sent, bounced, later, due, unknown, *queued = ids
    set_rows(store, [sent], DeliveryStatus.SENT)
    set_rows(store, [bounced], DeliveryStatus.BOUNCED)
    set_rows(store, [later], DeliveryStatus.DEFERRED, retry_at=FUTURE)
    set_rows(store, [due], DeliveryStatus.DEFERRED, retry_at=PAST)
    set_rows(store, [unknown], DeliveryStatus.UNKNOWN)

    first = store.claim_batch(campaign_id, owner="host:1", lease=LEASE, limit=3)
    second = store.claim_batch(campaign_id, owner="host:2", lease=LEASE, limit=100)

    assert first is not None
    assert second is not None
    assert [row.id for row in first.rows] == [due, queued[0], queued[1]]
    assert [row.id for row in second.rows] == queued[2:]
    assert store.claim_batch(campaign_id, owner="host:3", lease=LEASE, limit=100) is None
    resend = store.claim_batch(
        campaign_id, owner="host:3", lease=LEASE, limit=100, include_unknown=True
    )
    assert resend is not None
    assert [row.id for row in resend.rows] == [unknown]


def test_rows_given_back_are_claimable_again(store: Store, tmp_path: Path) -> None:
    """A sender that stops gives its rows back (they re-enter the partial index)."""
    campaign_id, ids = campaign_of(store, tmp_path, 5)
    taken = store.claim_batch(campaign_id, owner="host:1", lease=LEASE, limit=5)
    assert taken is not None
    assert len(taken.rows) == 5
    assert store.claim_batch(campaign_id, owner="host:2", lease=LEASE, limit=5) is None

    assert store.release_batches(campaign_id, owner="host:1") == 0

    again = store.claim_batch(campaign_id, owner="host:2", lease=LEASE, limit=5)
    assert again is not None
    assert [row.id for row in again.rows] == ids


def test_a_pass_claims_above_its_last_row_only(store: Store, tmp_path: Path) -> None:
    """`after`: the claim starts past the pass's last claimed row; a retry that came due
    below it is taken when the pass starts again from 0."""
    campaign_id, ids = campaign_of(store, tmp_path, 8)
    set_rows(store, [ids[1]], DeliveryStatus.DEFERRED, retry_at=PAST)

    later = store.claim_batch(campaign_id, owner="host:1", lease=LEASE, limit=100, after=ids[4])
    assert later is not None
    assert [row.id for row in later.rows] == ids[5:]
    assert (
        store.claim_batch(campaign_id, owner="host:1", lease=LEASE, limit=100, after=ids[7]) is None
    )
    rest = store.claim_batch(campaign_id, owner="host:1", lease=LEASE, limit=100)
    assert rest is not None
    assert [row.id for row in rest.rows] == ids[:5]


class AnotherSenderGivesBack(Store):
    """The real store, with another sender (host:2) beside the engine: it claims the first
    rows before the engine's first claim and gives them back (as a sender that stops
    does) at the engine's second, when the engine's pass is already past them."""

    def __init__(self, store: Store) -> None:
        super().__init__(store.engine)
        self.claims: list[int] = []

    def claim_batch(self, campaign_id: int, **kwargs: Any) -> Any:
        if not self.claims:
            held = super().claim_batch(campaign_id, owner="host:2", lease=LEASE, limit=2)
            assert held is not None
        elif len(self.claims) == 1:
            assert self.release_batches(campaign_id, owner="host:2") == 0
        self.claims.append(kwargs["after"])
        return super().claim_batch(campaign_id, **kwargs)


async def test_rows_given_back_behind_the_pass_are_sent_in_the_same_pass(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """The pass reaches the top, starts again from 0 once and takes what was given back
    below it: nobody is left queued when the sender says it finished."""
    addresses = seed_list(store, tmp_path, 6)
    campaign_id = new_campaign(store)
    sender = AnotherSenderGivesBack(store)
    settings = make_settings(tmp_path, smtp_server.port, batch_size=2, concurrency=1)

    result = await send(settings, sender, campaign_id)

    assert result.reason is StopReason.FINISHED
    assert sorted(smtp_server.recipients) == sorted(addresses)
    assert sender.claims[0] == 0
    assert 0 in sender.claims[1:]  # it started again from the bottom
    statuses = [row.status for row in store.iter_report(campaign_id)]
    assert statuses == [DeliveryStatus.SENT] * 6


def dead_pid() -> int:
    """The pid of a process of this machine that has exited."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


class SenderElsewhereDied(Store):
    """At the engine's first claim, a sender that has since died (a process of this
    machine that is gone, so taken over at once) holds the first rows of the campaign."""

    def __init__(self, store: Store, owner: str) -> None:
        super().__init__(store.engine)
        self.owner = owner
        self.first = True

    def claim_batch(self, campaign_id: int, **kwargs: Any) -> Any:
        if self.first:
            self.first = False
            held = super().claim_batch(campaign_id, owner=self.owner, lease=LEASE, limit=3)
            assert held is not None
        return super().claim_batch(campaign_id, **kwargs)


async def test_rows_taken_over_after_the_last_claim_are_sent_before_finishing(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """The reap at the end of a pass takes the dead sender's batch over (its rows queued
    again) and then finds nobody holding rows: the coordinator must not call the campaign
    finished with those rows still queued (found by review; older than the cursor)."""
    owner = f"{socket.gethostname()}:{dead_pid()}"
    addresses = seed_list(store, tmp_path, 10)
    campaign_id = new_campaign(store)
    settings = make_settings(tmp_path, smtp_server.port, batch_size=4, concurrency=1)

    result = await send(settings, SenderElsewhereDied(store, owner), campaign_id)

    assert result.reason is StopReason.FINISHED
    assert sorted(smtp_server.recipients) == sorted(addresses)
    statuses = [row.status for row in store.iter_report(campaign_id)]
    assert statuses == [DeliveryStatus.SENT] * 10


def test_a_run_is_never_called_finished_with_recipients_still_to_send(store: Store) -> None:
    """The backstop behind the engine's last pass: rows queued or in flight when a run
    ends "finished" leave the campaign sending (a worker goes on with it), not finished."""
    for counts in (DeliveryCounts(sent=7, queued=3), DeliveryCounts(sent=9, sending=1)):
        status, note = final_state(Stop(StopReason.FINISHED), counts, 1, store)
        assert status is CampaignStatus.SENDING
        assert "still to send" in note
    status, _ = final_state(Stop(StopReason.FINISHED), DeliveryCounts(sent=10), 1, store)
    assert status is CampaignStatus.FINISHED
