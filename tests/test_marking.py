"""Marking rows `sending` and recording outcomes, each in one statement on PostgreSQL: who is
taken, who is skipped, who is left alone; the chunk a sender marks at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from campaign_support import make_settings, new_campaign, seed_list, send
from mailer.models import DeliveryStatus, RecordedOutcome, UnsubscribeSource
from mailer.sending.chunks import ChunkSizer
from mailer.sending.engine import StopReason
from mailer.store import Store
from mailer.store.schema import deliveries
from smtp_server import SmtpTestServer

LEASE = timedelta(seconds=60)


def rows(store: Store, campaign_id: int) -> dict[str, tuple[str, int | None]]:
    """email -> (status, batch id)."""
    with store.engine.connect() as connection:
        found = connection.execute(
            select(deliveries.c.email, deliveries.c.status, deliveries.c.batch_id).where(
                deliveries.c.campaign_id == campaign_id
            )
        )
        return {row.email: (row.status, row.batch_id) for row in found}


def claimed(store: Store, tmp_path: Path, count: int) -> tuple[int, int, int, dict[str, int]]:
    """A campaign of `count` whose rows host:1 has claimed: (campaign, list, batch, ids)."""
    seed_list(store, tmp_path, count)
    campaign_id = new_campaign(store)
    list_id = store.list_id("members")
    assert store.claim_campaign(campaign_id, owner="host:1", lease=LEASE)
    store.snapshot_audience(campaign_id, list_id)
    claim = store.claim_batch(campaign_id, owner="host:1", lease=LEASE, limit=count)
    assert claim is not None
    return campaign_id, list_id, claim.batch, {row.email: row.id for row in claim.rows}


def outcome(delivery_id: int, status: DeliveryStatus, reply: str = "250 ok") -> RecordedOutcome:
    return RecordedOutcome(
        delivery_id=delivery_id,
        subscriber_id=0,
        status=status,
        attempts=1,
        code=250 if status is DeliveryStatus.SENT else 451,
        reply=reply,
        message_id=None,
        next_attempt_at=(
            datetime(2030, 1, 1, tzinfo=UTC) if status is DeliveryStatus.DEFERRED else None
        ),
        relay="relay-a",
    )


def test_one_statement_takes_the_mailable_and_skips_who_left(store: Store, tmp_path: Path) -> None:
    """Of one chunk: the still-mailable are taken (and stay in the batch), someone who left
    the list and someone unsubscribed from everything are skipped (and leave the batch), a
    row already sent is left as it is."""
    campaign_id, list_id, batch, ids = claimed(store, tmp_path, 5)
    stays, left, gone, done, other = sorted(ids)
    store.unsubscribe(store.get_subscriber_id(left), list_id, source=UnsubscribeSource.ONE_CLICK)
    store.unsubscribe_email(gone, source=UnsubscribeSource.PAGE)  # every list
    first = store.begin_sending(campaign_id, list_id, [ids[done]], owner="host:1", batch=batch)
    assert first == ({ids[done]}, set())
    store.record_outcomes(campaign_id, [outcome(ids[done], DeliveryStatus.SENT)], owner="host:1")

    marked = store.begin_sending(
        campaign_id,
        list_id,
        [ids[e] for e in (stays, left, gone, done)],
        owner="host:1",
        batch=batch,
    )

    assert marked == ({ids[stays]}, {ids[left], ids[gone]})
    assert rows(store, campaign_id) == {
        stays: ("sending", batch),
        left: ("skipped", None),
        gone: ("skipped", None),
        done: ("sent", None),
        other: ("queued", batch),
    }


def test_nothing_is_marked_in_a_batch_taken_over(store: Store, tmp_path: Path) -> None:
    """A sender whose batch another took over marks nothing, not even a skip, and is told."""
    campaign_id, list_id, batch, ids = claimed(store, tmp_path, 3)
    first, second, third = sorted(ids)
    store.unsubscribe(store.get_subscriber_id(third), list_id, source=UnsubscribeSource.ONE_CLICK)
    store.take_over_batches(
        campaign_id, owner="host:1", dead=True, journal_outcomes={}, journal_started=()
    )
    taken = store.begin_sending(
        campaign_id, list_id, [ids[first], ids[second], ids[third]], owner="host:1", batch=batch
    )
    assert taken is None
    assert {status for status, _ in rows(store, campaign_id).values()} == {"queued"}


def test_a_flush_is_written_whole_and_only_where_still_held(store: Store, tmp_path: Path) -> None:
    """Outcomes of one flush land on their rows (status, reply, retry time, relay); a row
    the sender no longer holds is not overwritten."""
    campaign_id, list_id, batch, ids = claimed(store, tmp_path, 4)
    sent, deferred, given_back, never_marked = sorted(ids)
    marked = store.begin_sending(
        campaign_id,
        list_id,
        [ids[sent], ids[deferred], ids[given_back]],
        owner="host:1",
        batch=batch,
    )
    assert marked is not None
    store.set_delivery_status([ids[given_back]], DeliveryStatus.QUEUED)  # no longer `sending`
    store.record_outcomes(
        campaign_id,
        [
            outcome(ids[sent], DeliveryStatus.SENT, "250 2.0.0 queued as A1"),
            outcome(ids[deferred], DeliveryStatus.DEFERRED, "451 try later, it's 'busy'"),
            outcome(ids[given_back], DeliveryStatus.SENT),
            outcome(ids[never_marked], DeliveryStatus.SENT),
        ],
        owner="host:1",
    )
    report = {row.email: row for row in store.iter_report(campaign_id)}
    assert (report[sent].status, report[sent].reply, report[sent].relay) == (
        DeliveryStatus.SENT,
        "250 2.0.0 queued as A1",
        "relay-a",
    )
    assert report[sent].sent_at is not None
    assert (report[deferred].status, report[deferred].reply) == (
        DeliveryStatus.DEFERRED,
        "451 try later, it's 'busy'",
    )
    assert report[deferred].sent_at is None
    assert store.next_retry_at(campaign_id) == datetime(2030, 1, 1, tzinfo=UTC)
    assert report[given_back].status is DeliveryStatus.QUEUED
    assert report[never_marked].status is DeliveryStatus.QUEUED
    assert rows(store, campaign_id)[sent] == ("sent", None)  # recorded: out of the batch


def test_the_same_row_twice_in_a_flush_keeps_the_first(store: Store, tmp_path: Path) -> None:
    """Never expected, but as one row at a time: the first outcome ends `sending`, the
    second finds the row no longer `sending` and writes nothing."""
    campaign_id, list_id, batch, ids = claimed(store, tmp_path, 1)
    (only,) = ids.values()
    assert store.begin_sending(campaign_id, list_id, [only], owner="host:1", batch=batch)
    store.record_outcomes(
        campaign_id,
        [outcome(only, DeliveryStatus.DEFERRED), outcome(only, DeliveryStatus.SENT)],
        owner="host:1",
    )
    assert store.delivery_counts(campaign_id).deferred == 1


# -- the chunk a sender marks at once ---------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_chunk_follows_the_rate_within_its_bounds() -> None:
    """As many rows as go out in the window at the rate measured over a period; never fewer
    than one per connection nor more than the cap; a pause brings it back down."""
    clock = Clock()
    sizer = ChunkSizer(least=16, most=128, window=0.05, period=0.25, clock=clock)
    assert sizer.next_size() == 16  # nothing measured yet
    for _ in range(500):  # 2,000 a second
        sizer.taken()
    clock.now += 0.25
    assert sizer.next_size() == 100
    for _ in range(100):
        sizer.taken()
    clock.now += 0.1
    assert sizer.next_size() == 100  # under a period: measured on
    clock.now += 0.15
    assert sizer.next_size() == 20  # 100 in 0.25 s
    for _ in range(10_000):
        sizer.taken()
    clock.now += 0.25
    assert sizer.next_size() == 128
    clock.now += 30  # a pause: nothing taken
    assert sizer.next_size() == 16


def test_the_chunk_bounds_are_checked() -> None:
    for least, most, window in ((0, 4, 0.05), (8, 4, 0.05), (4, 8, -1.0)):
        try:
            ChunkSizer(least=least, most=most, window=window)
        except ValueError:
            continue
        raise AssertionError(f"accepted least {least}, most {most}, window {window}")


class CountingStore(Store):
    """The real store, remembering each chunk the engine marks; `on_first_mark` runs
    before the first marking (something happening while the campaign sends)."""

    def __init__(self, store: Store, on_first_mark: Any = None) -> None:
        super().__init__(store.engine)
        self.chunks: list[int] = []
        self.on_first_mark = on_first_mark

    def begin_sending(self, *args: Any, **kwargs: Any) -> tuple[set[int], set[int]] | None:
        if not self.chunks and self.on_first_mark is not None:
            self.on_first_mark()
        self.chunks.append(len(args[2]))
        return super().begin_sending(*args, **kwargs)


async def test_a_rate_limited_sender_marks_one_row_per_connection_at_once(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """At 20/s the window (0.1 s) holds 2 messages: chunks stay at the 4 connections, every
    row once, and whoever unsubscribes while the campaign sends, before their chunk is
    marked, is skipped, not mailed."""
    addresses = seed_list(store, tmp_path, 30)
    campaign_id = new_campaign(store)
    leaver = addresses[-1]
    counting = CountingStore(
        store,
        on_first_mark=lambda: store.unsubscribe_email(
            leaver, "members", source=UnsubscribeSource.ONE_CLICK
        ),
    )
    settings = make_settings(tmp_path, smtp_server.port, rate_limit=20.0, concurrency=4)
    result = await send(settings, counting, campaign_id)
    assert result.reason is StopReason.FINISHED
    assert max(counting.chunks) <= 4
    assert sum(counting.chunks) == 30
    assert (result.counts.sent, result.counts.skipped) == (29, 1)
    assert sorted(smtp_server.recipients) == sorted(addresses[:-1])


async def test_a_fast_sender_marks_more_at_once_never_past_the_cap(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """Unlimited, 2 connections: no chunk over 8 connections' worth (16), every row
    marked once and delivered once."""
    addresses = seed_list(store, tmp_path, 300)
    counting = CountingStore(store)
    settings = make_settings(tmp_path, smtp_server.port, rate_limit=1e6, concurrency=2)
    result = await send(settings, counting, new_campaign(store))
    assert result.reason is StopReason.FINISHED
    assert max(counting.chunks) <= 16
    assert sum(counting.chunks) == 300
    assert sorted(smtp_server.recipients) == sorted(addresses)
