"""Settling rows a dead sender left `sending`: from its journal, or assuming the worst."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from campaign_support import new_campaign, seed_list
from mailer.models import DeliveryStatus, RecordedOutcome
from mailer.sending.journal import Journal
from mailer.sending.recovery import recover_in_flight
from mailer.store import Store


def in_flight_campaign(store: Store, tmp_path: Path, count: int) -> tuple[int, list[int]]:
    seed_list(store, tmp_path, count)
    campaign_id = new_campaign(store)
    list_id = store.list_id("members")
    assert store.claim_campaign(campaign_id, owner="host:1", lease=timedelta(seconds=30))
    store.snapshot_audience(campaign_id, list_id)
    rows = store.fetch_due(campaign_id, after_id=0, limit=count)
    ids = [row.id for row in rows]
    marked = store.begin_sending(campaign_id, list_id, ids, owner="host:1")
    assert marked is not None
    assert marked[0] == set(ids)
    return campaign_id, ids


def outcome(delivery_id: int, status: DeliveryStatus, attempts: int = 1) -> RecordedOutcome:
    return RecordedOutcome(
        delivery_id=delivery_id,
        subscriber_id=delivery_id,
        status=status,
        attempts=attempts,
        code=250 if status is DeliveryStatus.SENT else 451,
        reply="r",
        message_id="<m@x>",
    )


def test_journal_settles_each_row_by_its_last_event(store: Store, tmp_path: Path) -> None:
    """Sent -> applied; body started -> unknown; nothing -> queued again. A row deferred
    earlier in the run and started again counts as started, not as deferred."""
    campaign_id, (sent, started, _untouched, retried) = in_flight_campaign(store, tmp_path, 4)
    journal = Journal(tmp_path / "journal.jsonl")
    journal.body_started(sent)
    journal.outcome(outcome(sent, DeliveryStatus.SENT))
    journal.body_started(started)
    journal.outcome(outcome(retried, DeliveryStatus.DEFERRED))
    journal.body_started(retried)
    journal.close()
    report = recover_in_flight(store, tmp_path / "journal.jsonl", campaign_id)
    assert (report.applied, report.unknown, report.requeued) == (1, 2, 1)
    statuses = {row.email: row.status for row in store.iter_report(campaign_id)}
    assert sorted(statuses.values()) == sorted(
        [DeliveryStatus.SENT, DeliveryStatus.UNKNOWN, DeliveryStatus.QUEUED, DeliveryStatus.UNKNOWN]
    )
    assert store.in_flight(campaign_id) == []


def test_without_the_senders_journal_every_row_in_flight_is_unknown(
    store: Store, tmp_path: Path
) -> None:
    """Another machine's sender: its journal is not here, so nothing is resent blindly."""
    campaign_id, _ids = in_flight_campaign(store, tmp_path, 3)
    report = recover_in_flight(store, tmp_path / "not-here.jsonl", campaign_id)
    assert (report.applied, report.unknown, report.requeued) == (0, 3, 0)
    assert store.delivery_counts(campaign_id).unknown == 3
    assert store.fetch_due(campaign_id, after_id=0, limit=10) == []


def test_a_torn_last_line_is_ignored(store: Store, tmp_path: Path) -> None:
    campaign_id, (first, second) = in_flight_campaign(store, tmp_path, 2)
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.body_started(first)
    journal.close()
    with path.open("a") as handle:
        handle.write(f'{{"b":{second}')  # killed mid-write
    report = recover_in_flight(store, path, campaign_id)
    assert (report.unknown, report.requeued) == (1, 1)


def test_a_sender_that_lost_its_lease_takes_and_writes_nothing(
    store: Store, tmp_path: Path
) -> None:
    """Fencing: once another worker holds the campaign, the old sender can neither mark
    rows `sending` nor overwrite the ledger with its outcomes."""
    seed_list(store, tmp_path, 4)
    campaign_id = new_campaign(store)
    list_id = store.list_id("members")
    lease = timedelta(seconds=30)
    assert store.claim_campaign(campaign_id, owner="host:1", lease=lease)
    store.snapshot_audience(campaign_id, list_id)
    first, second, *_ = [r.id for r in store.fetch_due(campaign_id, after_id=0, limit=4)]
    assert store.begin_sending(campaign_id, list_id, [first], owner="host:1") is not None
    assert store.claim_campaign(campaign_id, owner="host:2", lease=lease, take_over_from="host:1")
    assert store.begin_sending(campaign_id, list_id, [second], owner="host:1") is None
    store.record_outcomes(campaign_id, [outcome(first, DeliveryStatus.SENT)], owner="host:1")
    statuses = {r.email: r.status for r in store.iter_report(campaign_id)}
    assert list(statuses.values()).count(DeliveryStatus.SENDING) == 1
    assert DeliveryStatus.SENT not in statuses.values()
