"""Found by review: an organiser's cancel survives whatever ends the run; schedule has the
send's duplicate guard; unknown outcomes count as sent for that guard; a body that reached
the relay before an error is never queued again; a row that gave up stays failed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from campaign_support import EVENT, cli_environment, make_settings, new_campaign, seed_list
from cli_support import run_mailer_here
from mailer.campaigns import lifecycle
from mailer.delivery.memory import MemoryTransport
from mailer.errors import CampaignError, TransportError
from mailer.message.event import load_event
from mailer.models import CampaignStatus, DeliveryStatus, Outcome, OutgoingMessage
from mailer.sending.engine import StopReason
from mailer.sending.run import run_campaign
from mailer.store import Store
from mailer.store.signer import load_signer
from smtp_server import SmtpTestServer

DOWN = Outcome(DeliveryStatus.DEFERRED, None, "cannot connect to 127.0.0.1:1: refused")


def test_release_never_overwrites_an_organisers_cancel(store: Store, tmp_path: Path) -> None:
    seed_list(store, tmp_path, 2)
    campaign_id = new_campaign(store)
    assert store.claim_campaign(campaign_id, owner="host:1", lease=timedelta(seconds=30))
    lifecycle.cancel(store, campaign_id)
    store.release_campaign(
        campaign_id,
        owner="host:1",
        status=CampaignStatus.PAUSED,
        error="paused: relay down",
        retry_after=timedelta(seconds=-1),
    )
    campaign = store.get_campaign(campaign_id)
    assert campaign.status is CampaignStatus.CANCELLED
    assert campaign.retry_at is None
    assert campaign.relay_pauses == 0
    assert campaign.lease_owner is None
    assert campaign_id not in store.due_campaigns()


@pytest.mark.parametrize("ending", ["relay-down", "waiting"])
async def test_a_cancel_during_the_run_stays_cancelled(
    store: Store, tmp_path: Path, ending: str
) -> None:
    """The organiser cancels while the last messages are with the relay; the relay then
    fails (relay down) or defers them (waiting for retries): still cancelled, not resent."""
    seed_list(store, tmp_path, 4)
    settings = make_settings(tmp_path, 1, retry_horizon=0, concurrency=4)
    campaign_id = new_campaign(store)

    def outcome(_message: OutgoingMessage) -> Outcome:
        if store.campaign_status(campaign_id) is CampaignStatus.SENDING:
            lifecycle.cancel(store, campaign_id)
        if ending == "relay-down":
            return DOWN
        return Outcome(DeliveryStatus.DEFERRED, 451, "4.3.0 try later")

    await run_campaign(
        settings=settings,
        store=store,
        transport=MemoryTransport(outcome),
        signer=load_signer(settings, store=store),
        campaign_id=campaign_id,
    )
    campaign = store.get_campaign(campaign_id)
    assert campaign.status is CampaignStatus.CANCELLED
    assert campaign.retry_at is None
    assert campaign_id not in store.due_campaigns()


def test_schedule_has_the_same_guard_as_send(
    tmp_path: Path, smtp_server_thread: SmtpTestServer
) -> None:
    """Seen: the same `mailer schedule` twice mailed everyone twice."""
    env = cli_environment(tmp_path, smtp_server_thread.port)
    path = tmp_path / "m.csv"
    path.write_text("email,name\nann@example.org,Ann\n")
    assert (
        run_mailer_here(env, tmp_path, "subscribers", "import", str(path), "-l", "m").returncode
        == 0
    )
    args = ("schedule", str(EVENT), "-l", "m", "--at", "2099-01-01 10:00", "--tz", "UTC", "-y")
    assert run_mailer_here(env, tmp_path, *args).returncode == 0, "the first schedule"
    again = run_mailer_here(env, tmp_path, *args)
    assert again.returncode == 1
    assert "campaign 1 of this event to 'm' is scheduled; nothing was scheduled" in again.stderr
    forced = run_mailer_here(env, tmp_path, *args, "--new")
    assert forced.returncode == 0, forced.stderr
    with Store.open(env["MAILER_DATABASE_URL"]) as store:
        assert [c.id for c in store.campaigns()] == [1, 2]


def test_a_campaign_that_reached_the_relay_only_as_unknown_counts_as_sent(
    store: Store, tmp_path: Path
) -> None:
    """A sender that died with every message at the relay leaves only `unknown` rows: the
    same `mailer send` must not mail them all again."""
    seed_list(store, tmp_path, 3)
    campaign_id = new_campaign(store)
    campaign = store.get_campaign(campaign_id)
    store.snapshot_audience(campaign_id, campaign.list_id)
    ids = [d.id for d in store.fetch_due(campaign_id, after_id=0, limit=10)]
    store.set_delivery_status(ids, DeliveryStatus.UNKNOWN)
    store.set_campaign_status(campaign_id, CampaignStatus.FINISHED)
    with pytest.raises(CampaignError, match=r"already went to 'members'.*reached 3"):
        lifecycle.plan_send(store, event=load_event(EVENT), list_name="members", new=False)


class BreaksAfterTheBody:
    """A transport whose send fails with an unexpected error after the body went."""

    def __init__(self, victim: str, error: Exception | None = None) -> None:
        self.victim = victim
        self.error = error or RuntimeError("a bug after the final dot")
        self.bodies: list[str] = []

    async def send(
        self, message: OutgoingMessage, *, on_body: Callable[[], None] | None = None
    ) -> Outcome:
        if on_body is not None:
            on_body()
        self.bodies.append(message.recipient)
        if message.recipient == self.victim:
            raise self.error
        return Outcome(DeliveryStatus.SENT, 250, "2.0.0 ok")

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (RuntimeError("a bug after the final dot"), StopReason.ERROR),
        # No transport raises a relay error after the body today; if one did, the row
        # must not go back to the queue untouched as a never-tried one does.
        (TransportError("the relay refused the session", code=554), StopReason.BREAKER),
    ],
    ids=["bug", "relay-error"],
)
async def test_an_error_after_the_body_went_makes_the_row_unknown_not_queued(
    store: Store, tmp_path: Path, error: Exception, reason: StopReason
) -> None:
    seed_list(store, tmp_path, 3)
    settings = make_settings(tmp_path, 1, concurrency=1)
    campaign_id = new_campaign(store)
    transport = BreaksAfterTheBody("person00000@example.org", error)
    result = await run_campaign(
        settings=settings,
        store=store,
        transport=transport,
        signer=load_signer(settings, store=store),
        campaign_id=campaign_id,
    )
    assert result.reason is reason
    counts = store.delivery_counts(campaign_id)
    assert counts.unknown == 1
    assert counts.sending == 0
    # Resuming does not send the unknown one again (only --resend-unknown would).
    again = BreaksAfterTheBody("nobody")
    await run_campaign(
        settings=settings,
        store=store,
        transport=again,
        signer=load_signer(settings, store=store),
        campaign_id=campaign_id,
        resume=True,
    )
    assert "person00000@example.org" not in again.bodies
    assert transport.bodies.count("person00000@example.org") == 1


async def test_a_row_that_gave_up_stays_failed_when_the_relay_is_down(
    store: Store, tmp_path: Path
) -> None:
    seed_list(store, tmp_path, 4)
    settings = make_settings(tmp_path, 1, concurrency=4, max_attempts=1)
    campaign_id = new_campaign(store)
    result = await run_campaign(
        settings=settings,
        store=store,
        transport=MemoryTransport(default=DOWN),
        signer=load_signer(settings, store=store),
        campaign_id=campaign_id,
    )
    counts = store.delivery_counts(campaign_id)
    assert counts.failed == result.counts.failed == 4
    assert counts.deferred == 0


def test_the_cooldown_doubles_in_the_store(store: Store, tmp_path: Path) -> None:
    """The stored retry time follows the streak: the second relay pause rests twice as long."""
    from mailer.sending.run import cooldown

    seed_list(store, tmp_path, 1)
    settings = make_settings(tmp_path, 1, breaker_cooldown=100.0, breaker_cooldown_max=10_000.0)
    campaign_id = new_campaign(store)
    gaps = []
    for _ in range(3):
        campaign = store.get_campaign(campaign_id)
        assert store.claim_campaign(
            campaign_id,
            owner="host:1",
            lease=timedelta(seconds=30),
            allowed=(CampaignStatus.SENDING, CampaignStatus.PAUSED),
        )
        before = datetime.now(UTC)
        store.release_campaign(
            campaign_id,
            owner="host:1",
            status=CampaignStatus.PAUSED,
            retry_after=cooldown(settings, campaign.relay_pauses),
        )
        retry_at = store.get_campaign(campaign_id).retry_at
        assert retry_at is not None
        gaps.append((retry_at - before).total_seconds())
    assert [round(g / 100) for g in gaps] == [1, 2, 4]
