"""A campaign the relay paused is taken again by a worker after a cool-down that doubles;
one a person paused stays paused. In process, with the Scheduler and a MemoryTransport
standing in for a relay that is down, then back."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from campaign_support import make_settings, new_campaign, seed_list
from mailer.campaigns import lifecycle
from mailer.campaigns.scheduler import Scheduler
from mailer.clock import utcnow
from mailer.config import Settings
from mailer.delivery.memory import MemoryTransport
from mailer.models import CampaignStatus, DeliveryStatus, Outcome
from mailer.sending.run import cooldown
from mailer.store import Store
from mailer.store.signer import load_signer

DOWN = Outcome(DeliveryStatus.DEFERRED, None, "cannot connect to 127.0.0.1:1: refused")


class Relay:
    """Hands the scheduler a transport per campaign run: down until `up` is set."""

    def __init__(self) -> None:
        self.up = False
        self.transports: list[MemoryTransport] = []

    def __call__(self, _settings: Settings) -> MemoryTransport:
        self.transports.append(MemoryTransport() if self.up else MemoryTransport(default=DOWN))
        return self.transports[-1]


async def run_once(scheduler: Scheduler) -> None:
    await scheduler.poll_once()
    running = list(scheduler._running.values())
    if running:
        await asyncio.gather(*running)


async def due(store: Store, campaign_id: int, within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while campaign_id not in await asyncio.to_thread(store.due_campaigns):
        assert loop.time() < deadline, "the cool-down never ended"
        await asyncio.sleep(0.05)


async def test_a_relay_paused_campaign_is_retried_after_a_doubling_cooldown(
    store: Store, tmp_path: Path
) -> None:
    seed_list(store, tmp_path, 5)
    settings = make_settings(tmp_path, 1, breaker_cooldown=0.3, breaker_cooldown_max=60.0)
    campaign_id = new_campaign(store)
    # Like a `mailer send` that the relay stopped: the campaign is paused, not finished.
    store.release_campaign(campaign_id, owner="host:1", status=CampaignStatus.SENDING)
    relay = Relay()
    scheduler = Scheduler(
        settings=settings, store=store, signer=load_signer(settings), transport_factory=relay
    )
    await run_once(scheduler)
    first = store.get_campaign(campaign_id)
    assert first.status is CampaignStatus.PAUSED
    assert first.relay_pauses == 1
    assert first.retry_at is not None
    assert "cannot connect" in (first.last_error or "")
    # Resting: not due before its retry time. (On a loaded machine the 0.3 s may be over
    # by now, which made `not in due_campaigns()` alone fail once: read the clock after.)
    resting = campaign_id not in store.due_campaigns()
    assert resting or utcnow() >= first.retry_at

    await due(store, campaign_id)
    await run_once(scheduler)  # still down: paused again, for twice as long
    second = store.get_campaign(campaign_id)
    assert second.status is CampaignStatus.PAUSED
    assert second.relay_pauses == 2
    assert second.retry_at is not None
    assert first.retry_at is not None
    assert cooldown(settings, 1) == 2 * cooldown(settings, 0)

    relay.up = True
    await due(store, campaign_id)
    await run_once(scheduler)
    done = store.get_campaign(campaign_id)
    assert done.status is CampaignStatus.FINISHED
    assert done.retry_at is None
    assert done.relay_pauses == 0
    assert sorted(m.recipient for m in relay.transports[-1].sent) == [
        f"person{i:05d}@example.org" for i in range(5)
    ]


async def test_a_campaign_paused_by_a_person_is_never_retried_by_itself(
    store: Store, tmp_path: Path
) -> None:
    seed_list(store, tmp_path, 2)
    campaign_id = new_campaign(store)
    store.release_campaign(
        campaign_id,
        owner="host:1",
        status=CampaignStatus.PAUSED,
        retry_after=timedelta(seconds=-1),  # the relay paused it; its rest is over
    )
    assert campaign_id in store.due_campaigns()
    # The organiser says: keep it paused (it becomes a person's pause).
    lifecycle.pause(store, campaign_id)
    assert store.get_campaign(campaign_id).retry_at is None
    assert campaign_id not in store.due_campaigns()


def test_the_cooldown_doubles_and_is_capped() -> None:
    settings = make_settings(Path("/nonexistent"), 1, breaker_cooldown=60, breaker_cooldown_max=600)
    assert [cooldown(settings, n).total_seconds() for n in range(6)] == [
        60,
        120,
        240,
        480,
        600,
        600,
    ]
    assert cooldown(settings, 10_000).total_seconds() == 600
