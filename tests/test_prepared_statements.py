"""On PostgreSQL a sender's hot statements are prepared once per connection and stay so.

psycopg prepares a statement after five executions of the same text and forgets all it
prepared at any ROLLBACK. A sender reads its campaign's status every second; when reads
ended in ROLLBACK, the claims, markings and records were parsed and planned at every call.
Each check runs on a store of one pooled connection and asks the server itself
(`pg_prepared_statements` lists what this session has prepared)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from campaign_support import new_campaign, seed_list
from mailer.store import Store

pytestmark = pytest.mark.postgres

LEASE = timedelta(seconds=60)
PSYCOPG_PREPARES_AFTER = 5  # psycopg's prepare_threshold default


@pytest.fixture
def one_connection_store(postgres_url: str) -> Iterator[Store]:
    """The store's queries over a pool of one connection: every call reuses it."""
    store = Store(create_engine(postgres_url, pool_size=1, max_overflow=0, pool_pre_ping=True))
    yield store
    store.close()


def prepared(store: Store, containing: str) -> list[str]:
    with store.engine.connect() as connection:  # the one connection every call used
        found = connection.execute(
            text("SELECT statement FROM pg_prepared_statements WHERE statement LIKE :text"),
            {"text": f"%{containing}%"},
        )
        return [str(statement) for statement in found.scalars()]


def test_reads_keep_what_is_prepared(one_connection_store: Store, tmp_path: Path) -> None:
    store = one_connection_store
    seed_list(store, tmp_path, 3)
    campaign_id = new_campaign(store)
    for _ in range(PSYCOPG_PREPARES_AFTER + 2):
        store.campaign_status(campaign_id)
        # the other reads a sender and the dashboard make between two status reads
        store.delivery_counts(campaign_id)
        store.get_campaign(campaign_id)
        store.batch_holders(campaign_id)
    assert prepared(store, "SELECT campaigns.status \nFROM campaigns")


def test_a_marking_is_prepared_whatever_the_size_of_its_chunk(
    one_connection_store: Store, tmp_path: Path
) -> None:
    """The engine marks as many rows as go out in 0.1 s: a different number each time."""
    store = one_connection_store
    sizes = range(1, PSYCOPG_PREPARES_AFTER + 3)
    seed_list(store, tmp_path, sum(sizes))
    campaign_id = new_campaign(store)
    list_id = store.list_id("members")
    assert store.claim_campaign(campaign_id, owner="host:1", lease=LEASE)
    store.snapshot_audience(campaign_id, list_id)
    claim = store.claim_batch(campaign_id, owner="host:1", lease=LEASE, limit=sum(sizes))
    assert claim is not None
    ids = [row.id for row in claim.rows]
    taken: set[int] = set()
    for size in sizes:
        chunk, ids = ids[:size], ids[size:]
        marked = store.begin_sending(campaign_id, list_id, chunk, owner="host:1", batch=claim.batch)
        assert marked is not None
        taken |= marked[0]
        assert marked[0] == set(chunk)
    assert len(taken) == sum(sizes)
    assert prepared(store, "UPDATE deliveries SET status=CASE")
