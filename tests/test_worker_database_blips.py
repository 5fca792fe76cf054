"""`mailer worker` outlives a database error under its poll: a connection cut by a
database restart or pg_terminate_backend raises SQLAlchemy's own errors (not mailer's),
and the worker exited on them ("error: the database failed: terminating connection...").
Now the poll is logged as failed, in one line without the SQL, and the next one goes on."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from campaign_support import EVENT, make_settings, seed_list
from mailer.campaigns import lifecycle
from mailer.campaigns.scheduler import Scheduler
from mailer.clock import utcnow
from mailer.delivery.memory import MemoryTransport
from mailer.message.event import load_event
from mailer.models import CampaignStatus
from mailer.store import Store
from mailer.store.signer import load_signer

CUT = "terminating connection due to administrator command"


class BlinkingStore(Store):
    """The real store, whose first look for due campaigns loses its connection."""

    blinks = 1

    def due_campaigns(self) -> list[int]:
        if self.blinks:
            self.blinks -= 1
            raise OperationalError("SELECT campaigns.id FROM campaigns ...", {}, Exception(CUT))
        return super().due_campaigns()


async def test_a_poll_that_loses_its_connection_is_retried_not_fatal(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = BlinkingStore.open(database_url)
    try:
        seed_list(store, tmp_path, 3)
        event = load_event(EVENT)
        plan = lifecycle.plan_send(store, event=event, list_name="members", new=True)
        campaign = lifecycle.schedule(
            store, plan, event=event, event_path=EVENT, when=utcnow() - timedelta(seconds=1)
        )
        settings = make_settings(tmp_path, 9, database_url=database_url, poll_interval=0.05)
        transport = MemoryTransport()
        scheduler = Scheduler(
            settings=settings,
            store=store,
            signer=load_signer(settings, store=store),
            transport_factory=lambda _settings: transport,
        )
        with caplog.at_level(logging.ERROR, logger="mailer.worker"):
            running = asyncio.create_task(scheduler.run())
            try:
                for _ in range(600):
                    if store.get_campaign(campaign.id).status is CampaignStatus.FINISHED:
                        break
                    assert not running.done(), "the worker stopped"
                    await asyncio.sleep(0.05)
            finally:
                scheduler.request_stop()
                await running
        assert store.get_campaign(campaign.id).status is CampaignStatus.FINISHED
        assert sorted(m.recipient for m in transport.sent) == [
            f"person{i:05d}@example.org" for i in range(3)
        ]
        failed = [r.getMessage() for r in caplog.records if "poll-failed" in r.getMessage()]
        assert len(failed) == 1
        assert CUT in failed[0]
        assert "SELECT" not in failed[0]
    finally:
        store.close()
