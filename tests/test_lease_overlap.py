"""Two senders around one campaign (a pause, then the same `mailer send` again; a cancel
while sending): nobody is mailed twice and no accepted message goes unrecorded.

The relay here is MemoryTransport (the engine's seam) as a slow relay: each send takes a
chosen time after the body is handed over. The pause or cancel is made by the relay
itself as a given send starts, so it always lands while messages are in flight, whatever
the store's speed (SQLite file or PostgreSQL) and the machine's load.
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
from mailer.delivery.memory import MemoryTransport
from mailer.errors import CampaignError
from mailer.message.event import load_event
from mailer.models import CampaignStatus, DeliveryStatus, Outcome, OutgoingMessage
from mailer.sending.run import RunResult, run_campaign
from mailer.store import Store
from mailer.store.signer import load_signer

ACCEPTED = Outcome(DeliveryStatus.SENT, 250, "2.0.0 ok")


def accept_all_and(
    action: Callable[[], None], *, at_send: int
) -> Callable[[OutgoingMessage], Outcome]:
    """MemoryTransport outcomes: every message accepted; `action` (a person pausing or
    cancelling) happens as send number `at_send` starts."""
    started = 0

    def outcome(_message: OutgoingMessage) -> Outcome:
        nonlocal started
        started += 1
        if started == at_send:
            action()
        return ACCEPTED

    return outcome


def accepted(*relays: MemoryTransport) -> list[str]:
    """Everyone the relays accepted a message for, across senders."""
    return [message.recipient for relay in relays for message in relay.sent]


def run(
    settings: Settings,
    store: Store,
    campaign_id: int,
    relay: MemoryTransport,
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
    store: Store, database_url: str, tmp_path: Path
) -> None:
    """The first sender keeps its lease until what it has in flight is recorded, so the
    second `mailer send` is refused meanwhile, and later sends only the rest."""
    seed_list(store, tmp_path, 12)
    # A lease of 3 s renewed every 0.5 s: six chances, so a loaded machine (two suites on
    # two cores) still renews it; the relay answers after 5 s, the check comes at 3.5 s.
    settings = make_settings(
        tmp_path, 2525, database_url=database_url, lease_seconds=3.0, concurrency=4
    )
    campaign_id = new_campaign(store)
    paused = asyncio.Event()

    def pause() -> None:
        store.set_campaign_status(campaign_id, CampaignStatus.PAUSED)
        paused.set()

    slow = MemoryTransport(accept_all_and(pause, at_send=1), delay=5.0)
    first = run(settings, store, campaign_id, slow, "host-a:1")
    await paused.wait()
    await asyncio.sleep(3.5)  # longer than the lease: it must have been renewed meanwhile
    choice = start_or_resume(store, event_path=EVENT, event=load_event(EVENT), list_name="members")
    refused = MemoryTransport()
    with pytest.raises(CampaignError, match="being sent by host-a:1"):
        await run(settings, store, choice.campaign.id, refused, "host-b:2", resume=True)
    assert refused.messages == []
    halted = await first
    assert halted.campaign.status is CampaignStatus.PAUSED
    again = MemoryTransport()
    rest = await run(settings, store, campaign_id, again, "host-b:2", resume=True)
    assert rest.campaign.status is CampaignStatus.FINISHED
    everyone = accepted(slow, refused, again)
    assert max(Counter(everyone).values()) == 1
    assert len(everyone) == 12
    assert store.delivery_counts(campaign_id).sent == 12


async def test_cancel_while_sending_still_records_what_the_relay_accepted(
    store: Store, database_url: str, tmp_path: Path
) -> None:
    """Cancelled as the fifth send starts (four at a time: at least one already accepted,
    others in flight), the sender stops taking recipients, records every message the relay
    accepted, leaves no row `sending` and gives up its lease."""
    seed_list(store, tmp_path, 20)
    settings = make_settings(
        tmp_path, 2525, database_url=database_url, lease_seconds=0.6, concurrency=4
    )
    campaign_id = new_campaign(store)

    def cancel() -> None:
        store.set_campaign_status(campaign_id, CampaignStatus.CANCELLED)

    relay = MemoryTransport(accept_all_and(cancel, at_send=5), delay=0.3)
    result = await run(settings, store, campaign_id, relay, "host-a:1")
    counts = store.delivery_counts(campaign_id)
    assert result.campaign.status is CampaignStatus.CANCELLED
    assert result.campaign.lease_owner is None
    assert 0 < counts.sent == len(accepted(relay)) < 20
    assert counts.sending == 0
