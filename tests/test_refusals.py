"""A send through a relay off this machine with the demo's sender or base URL is refused by
`send`, `send --test-to`, `schedule` and the worker, before any connection is made.

The relay named here (`relay.invalid`) is never contacted: the refusal comes first, and
`.invalid` can never resolve.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from campaign_support import EVENT, cli_environment, make_settings, seed_list
from cli_support import run_mailer_here
from mailer.campaigns import lifecycle
from mailer.campaigns.scheduler import Scheduler
from mailer.delivery.memory import MemoryTransport
from mailer.message.event import load_event
from mailer.models import CampaignStatus
from mailer.store import Store
from mailer.store.signer import load_signer

OFF_MACHINE = {"MAILER_SMTP_HOST": "relay.invalid", "MAILER_SMTP_PORT": "25"}


def imported(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = cli_environment(tmp_path, 2525, **settings)
    members = tmp_path / "members.csv"
    members.write_text("email,name\nann@example.org,Ann\nbob@example.org,Bob\n")
    result = run_mailer_here(
        env, tmp_path, "subscribers", "import", str(members), "--list", "members"
    )
    assert result.returncode == 0, result.stderr
    return env


@pytest.mark.parametrize(
    ("args", "setting"),
    [
        (("send", str(EVENT), "--list", "members", "--yes"), "MAILER_BASE_URL"),
        (("send", str(EVENT), "--list", "members", "--test-to", "me@example.org"), "BASE_URL"),
        (
            ("schedule", str(EVENT), "-l", "members", "--at", "2099-01-01 10:00", "-y"),
            "MAILER_BASE_URL",
        ),
    ],
    ids=["send", "test-send", "schedule"],
)
def test_demo_base_url_through_a_remote_relay_is_refused(
    tmp_path: Path, args: tuple[str, ...], setting: str
) -> None:
    env = imported(tmp_path, **OFF_MACHINE)
    result = run_mailer_here(env, tmp_path, *args)
    assert result.returncode == 2, result.stdout
    assert "refusing to send through relay.invalid" in result.stderr
    assert setting in result.stderr
    assert "Traceback" not in result.stderr
    listing = run_mailer_here(env, tmp_path, "campaign", "list")
    assert "members" not in listing.stdout  # no campaign was written


def test_demo_sender_through_a_remote_relay_is_refused(tmp_path: Path) -> None:
    env = imported(
        tmp_path,
        **OFF_MACHINE,
        MAILER_BASE_URL="https://lists.cwo-london.org.uk",
        MAILER_FROM_ADDRESS="invitations@mailer.localhost",
    )
    result = run_mailer_here(env, tmp_path, "send", str(EVENT), "--list", "members", "--yes")
    assert result.returncode == 2
    assert "MAILER_FROM_ADDRESS" in result.stderr


async def test_worker_claims_nothing_while_the_settings_would_send_broken_mail(
    sqlite_store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seed_list(sqlite_store, tmp_path, 2)
    event = load_event(EVENT)
    campaign = lifecycle.schedule(
        sqlite_store,
        lifecycle.plan_schedule(sqlite_store, event=event, list_name="members", new=False),
        event=event,
        event_path=EVENT,
        when=datetime.now(UTC) - timedelta(seconds=1),
    )
    settings = make_settings(
        tmp_path, 25, smtp_host="relay.invalid", base_url="http://127.0.0.1:8000"
    )
    transports: list[MemoryTransport] = []

    def transport_factory(_settings: object) -> MemoryTransport:
        transports.append(MemoryTransport())
        return transports[-1]

    scheduler = Scheduler(
        settings=settings,
        store=sqlite_store,
        signer=load_signer(settings),
        transport_factory=transport_factory,
    )
    with caplog.at_level(logging.ERROR, logger="mailer.worker"):
        await scheduler.poll_once()
        await scheduler.poll_once()
    assert transports == []  # no sender was even built
    assert sqlite_store.get_campaign(campaign.id).status is CampaignStatus.SCHEDULED
    refusals = [r for r in caplog.records if "refusing-to-send" in r.getMessage()]
    assert len(refusals) == 1  # said once, not at every poll
    assert "MAILER_BASE_URL" in refusals[0].getMessage()
