"""Two senders around one campaign (a pause, then the same `mailer send` again; a cancel
while sending): nobody is mailed twice and no accepted message goes unrecorded.

The relay here is an in-memory transport (the engine's seam) whose sends take a chosen
time, so the overlaps happen deterministically.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from campaign_support import EVENT, make_settings, new_campaign, seed_list
from mailer.campaigns.lifecycle import start_or_resume
from mailer.config import Settings
from mailer.errors import CampaignError
from mailer.message.event import load_event
from mailer.models import CampaignStatus, DeliveryStatus, Outcome, OutgoingMessage
from mailer.sending.run import RunResult, run_campaign
from mailer.store import Store
from mailer.tokens import load_signer


class SlowRelay:
    """Accepts every message after `delay` seconds; records what it accepted."""

    def __init__(self, delay: float, accepted: list[str]) -> None:
        self.delay = delay
        self.accepted = accepted

    async def send(
        self, message: OutgoingMessage, *, on_body: Callable[[], None] | None = None
    ) -> Outcome:
        await asyncio.sleep(self.delay)
        if on_body is not None:
            on_body()
        self.accepted.append(message.recipient)
        return Outcome(DeliveryStatus.SENT, 250, "2.0.0 ok")

    async def aclose(self) -> None:
        return None


def run(
    settings: Settings,
    store: Store,
    campaign_id: int,
    relay: SlowRelay,
    owner: str,
    *,
    resume: bool = False,
) -> asyncio.Task[RunResult]:
    return asyncio.create_task(
        run_campaign(
            settings=settings,
            store=store,
            transport=relay,
            signer=load_signer(settings),
            campaign_id=campaign_id,
            owner=owner,
            resume=resume,
        )
    )


async def test_pause_then_send_again_while_the_first_sender_drains(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """The first sender keeps its lease until what it has in flight is recorded, so the
    second `mailer send` is refused meanwhile, and later sends only the rest."""
    seed_list(sqlite_store, tmp_path, 12)
    settings = make_settings(tmp_path, 2525, lease_seconds=0.6, concurrency=4)
    campaign_id = new_campaign(sqlite_store)
    accepted: list[str] = []
    first = run(settings, sqlite_store, campaign_id, SlowRelay(2.0, accepted), "host-a:1")
    await asyncio.sleep(0.3)
    sqlite_store.set_campaign_status(campaign_id, CampaignStatus.PAUSED)
    await asyncio.sleep(1.0)  # longer than the lease: it must have been renewed meanwhile
    choice = start_or_resume(
        sqlite_store, event_path=EVENT, event=load_event(EVENT), list_name="members"
    )
    with pytest.raises(CampaignError, match="being sent by host-a:1"):
        await run(
            settings,
            sqlite_store,
            choice.campaign.id,
            SlowRelay(0.0, accepted),
            "host-b:2",
            resume=True,
        )
    halted = await first
    assert halted.campaign.status is CampaignStatus.PAUSED
    rest = await run(
        settings, sqlite_store, campaign_id, SlowRelay(0.0, accepted), "host-b:2", resume=True
    )
    assert rest.campaign.status is CampaignStatus.FINISHED
    assert max(Counter(accepted).values()) == 1
    assert len(accepted) == 12
    assert sqlite_store.delivery_counts(campaign_id).sent == 12


async def test_cancel_while_sending_still_records_what_the_relay_accepted(
    sqlite_store: Store, tmp_path: Path
) -> None:
    seed_list(sqlite_store, tmp_path, 20)
    settings = make_settings(tmp_path, 2525, lease_seconds=0.6, concurrency=4)
    campaign_id = new_campaign(sqlite_store)
    accepted: list[str] = []
    sending = run(settings, sqlite_store, campaign_id, SlowRelay(0.3, accepted), "host-a:1")
    await asyncio.sleep(0.45)
    sqlite_store.set_campaign_status(campaign_id, CampaignStatus.CANCELLED)
    result = await sending
    counts = sqlite_store.delivery_counts(campaign_id)
    assert result.campaign.status is CampaignStatus.CANCELLED
    assert result.campaign.lease_owner is None
    assert 0 < counts.sent == len(accepted) < 20
    assert counts.sending == 0
