"""A row taken off the queue but not sent goes back to `queued` even when the database
refuses the give-back at that moment (review finding 9).

Seen before: the row stayed `sending`, the lease was released, and the next sender, who
no longer knew whose journal to read, marked it `unknown`: that person was never mailed
unless the organiser chose --resend-unknown. The sender now settles its own rows in
flight from its own journal before it lets the campaign go.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from campaign_support import make_settings, new_campaign, seed_list, send
from mailer.campaigns import lifecycle
from mailer.models import CampaignStatus, DeliveryStatus
from mailer.store import Store
from smtp_server import SmtpTestServer


class GiveBackRefused(Store):
    """The real store, except that every give-back (sending -> previous state, fenced by
    the owner) fails as a dropped connection would, while the flag is up."""

    refusing = True

    def set_delivery_status(
        self,
        ids: Iterable[int],
        status: DeliveryStatus,
        *,
        only_from: DeliveryStatus | None = None,
        owner: str | None = None,
        campaign_id: int | None = None,
    ) -> None:
        if self.refusing and only_from is DeliveryStatus.SENDING:
            raise OperationalError("UPDATE deliveries", {}, Exception("connection lost"))
        super().set_delivery_status(
            ids, status, only_from=only_from, owner=owner, campaign_id=campaign_id
        )


@pytest.fixture
def flaky_store(database_url: str) -> Iterator[GiveBackRefused]:
    opened = GiveBackRefused.open(database_url)
    assert isinstance(opened, GiveBackRefused)
    yield opened
    opened.close()


async def test_rows_whose_give_back_failed_are_queued_again_not_lost_as_unknown(
    flaky_store: GiveBackRefused, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    store = flaky_store
    seed_list(store, tmp_path, 300)
    settings = make_settings(tmp_path, smtp_server.port, rate_limit=100.0, concurrency=4)
    campaign_id = new_campaign(store)
    sending = asyncio.create_task(send(settings, store, campaign_id))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while len(smtp_server.messages) < 20:
        assert loop.time() < deadline, "the first 20 never arrived"
        await asyncio.sleep(0.02)
    await asyncio.to_thread(lifecycle.pause, store, campaign_id)
    first = await asyncio.wait_for(sending, 60)

    counts = store.delivery_counts(campaign_id)
    assert store.get_campaign(campaign_id).status is CampaignStatus.PAUSED
    assert store.get_campaign(campaign_id).lease_owner is None
    assert (counts.sending, counts.unknown) == (0, 0)
    assert counts.sent == len(smtp_server.messages) == first.counts.sent
    assert counts.queued == 300 - counts.sent

    store.refusing = False
    await asyncio.to_thread(lifecycle.plan_resume, store, campaign_id)
    fast = make_settings(tmp_path, smtp_server.port, rate_limit=2000.0, concurrency=4)
    await send(fast, store, campaign_id, resume=True)
    received = smtp_server.recipients
    assert len(received) == len(set(received)) == 300
