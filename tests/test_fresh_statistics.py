"""PostgreSQL: a list imported and sent at once has fresh planner statistics (an import
or an audience snapshot of 1,000 rows or more runs ANALYZE). Without them the row-marking
check scanned the list's memberships for every row it marked (75 ms a call instead of
0.6 ms in a 20,000-recipient run: tests/test_many_senders.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from campaign_support import new_campaign, seed_list
from mailer.store import Store

pytestmark = pytest.mark.postgres


def analysed_at(store: Store) -> dict[str, datetime | None]:
    with store.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT relname, last_analyze FROM pg_stat_user_tables "
                "WHERE relname IN ('subscribers', 'memberships', 'deliveries')"
            )
        )
        return {str(name): when for name, when in rows}


def test_a_large_import_and_its_snapshot_refresh_the_statistics(
    postgres_url: str, tmp_path: Path
) -> None:
    store = Store.open(postgres_url)
    try:
        seed_list(store, tmp_path, 20, list_name="few")
        small = analysed_at(store)
        seed_list(store, tmp_path, 1200)
        imported = analysed_at(store)
        for table in ("subscribers", "memberships"):
            assert imported[table] is not None
            assert imported[table] != small[table]
        assert imported["deliveries"] == small["deliveries"]  # not touched by an import

        campaign_id = new_campaign(store)
        assert store.snapshot_audience(campaign_id, store.get_campaign(campaign_id).list_id)
        snapshot = analysed_at(store)
        assert snapshot["deliveries"] is not None
        assert snapshot["deliveries"] != imported["deliveries"]
    finally:
        store.close()


def test_a_small_import_leaves_statistics_to_autovacuum(postgres_url: str, tmp_path: Path) -> None:
    store = Store.open(postgres_url)
    try:
        before = analysed_at(store)
        seed_list(store, tmp_path, 50)
        assert analysed_at(store) == before
    finally:
        store.close()


def test_an_analyze_that_times_out_leaves_the_pooled_connection_as_it_was(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """ANALYZE waits at most 2 s for its table (lock_timeout, a session setting in
    autocommit): when it gives up, the setting must not stay on the pooled connection,
    where any later wait over 2 s (an event's advisory lock) would fail."""
    store = Store(create_engine(postgres_url, pool_size=1, max_overflow=0, pool_pre_ping=True))
    other = create_engine(postgres_url)
    try:
        with other.connect() as blocker:
            blocker.execute(text("LOCK TABLE subscribers IN ACCESS EXCLUSIVE MODE"))
            store.refresh_statistics("subscribers", changed=1_000_000)
            blocker.rollback()
        assert "analyze-failed" in caplog.text  # it did time out, and said so
        with store.engine.connect() as connection:  # the store's one pooled connection
            assert connection.execute(text("SHOW lock_timeout")).scalar() == "0"
    finally:
        store.close()
        other.dispose()
