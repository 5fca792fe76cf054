"""Several sender processes beyond `mailer send` (issue 15).

`mailer campaign resume ID` and `mailer campaign send-now ID` take `--processes N` as
`mailer send` does: run for real, a helper process claims batches of the campaign beside
the command's own process. And a helper that stops because its relay is down, its breaker
tripped (a refused login) pauses the campaign for every sender, with the reason
`mailer campaign show` prints, as the coordinator does when it sees that itself.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from campaign_support import (
    EVENT,
    cli_environment,
    mailer_command,
    make_settings,
    new_campaign,
    run_mailer,
    seed_list,
    send,
)
from mailer.campaigns import lifecycle
from mailer.cli.send_cmd import print_result
from mailer.clock import utcnow
from mailer.delivery.base import Transport
from mailer.message.event import load_event
from mailer.models import CampaignStatus, DeliveryStatus, Outcome, OutgoingMessage
from mailer.sending.engine import StopReason
from mailer.sending.helping import help_campaign
from mailer.sending.relays import transport_for
from mailer.sending.run import run_campaign
from mailer.store import Store
from mailer.store.signer import load_signer
from smtp_server import SmtpTestServer


def _closed_port() -> int:
    """A loopback port where nothing listens (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.02)


# -- resume and send-now with --processes ---------------------------------------------


def _paused(store: Store) -> int:
    campaign_id = new_campaign(store)
    lifecycle.pause(store, campaign_id)
    return campaign_id


def _scheduled(store: Store) -> int:
    event = load_event(EVENT)
    plan = lifecycle.plan_schedule(store, event=event, list_name="members", new=True)
    when = utcnow() + timedelta(days=1)
    return lifecycle.schedule(store, plan, event=event, event_path=EVENT, when=when).id


@pytest.mark.parametrize(("command", "campaign"), [("resume", _paused), ("send-now", _scheduled)])
def test_resume_and_send_now_send_with_helper_processes(
    command: str,
    campaign: Callable[[Store], int],
    database_url: str,
    store: Store,
    tmp_path: Path,
) -> None:
    """The command's process and a helper it starts both claim batches; every recipient
    is sent once and the command reports them all. The relay answers slowly until both
    have taken part (one connection each), so the command cannot finish alone first."""
    addresses = seed_list(store, tmp_path, 40)
    campaign_id = campaign(store)
    with SmtpTestServer() as server:
        server.delays["END"] = 1.0  # 40 s for one process alone: time for the helper
        env = cli_environment(
            tmp_path,
            server.port,
            MAILER_DATABASE_URL=database_url,
            MAILER_RATE_LIMIT="1000",
            MAILER_CONCURRENCY="1",
            MAILER_BATCH_SIZE="4",
            MAILER_POLL_INTERVAL="0.2",
        )
        command_line = ["campaign", command, str(campaign_id), "--yes", "--processes", "2"]
        process = subprocess.Popen(
            mailer_command(*command_line),
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            senders: set[int] = set()

            def both_take_part() -> bool:
                holders = store.batch_holders(campaign_id)
                senders.update(int(h.owner.rpartition(":")[2]) for h in holders)
                return len(senders) >= 2 or process.poll() is not None

            _wait_until(both_take_part, 60, "a helper process to claim a batch")
            server.delays.clear()
            out, err = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        received = Counter(server.recipients)
    assert process.returncode == 0, (out, err)
    assert process.pid in senders
    assert len(senders) == 2, senders  # the command's process and one helper
    assert received == Counter(addresses)
    assert f"{len(addresses)} sent" in out
    assert store.get_campaign(campaign_id).status is CampaignStatus.FINISHED


def test_resume_refuses_zero_processes_in_one_line(tmp_path: Path) -> None:
    result = run_mailer(
        cli_environment(tmp_path, 2525), tmp_path, "campaign", "resume", "1", "--processes", "0"
    )
    assert result.returncode == 2
    assert "--processes" in result.stderr
    assert "Traceback" not in result.stderr


# -- a helper that stops for its relay pauses the campaign for everyone ----------------


class _Timed:
    """The coordinator's relay, noting when each message starts."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.started: list[float] = []
        self.sending = asyncio.Event()

    async def send(
        self, message: OutgoingMessage, *, on_body: Callable[[], None] | None = None
    ) -> Outcome:
        self.started.append(time.monotonic())
        self.sending.set()
        return await self.inner.send(message, on_body=on_body)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("fault", ["relay-down", "login-refused", "relays-down"])
async def test_a_helper_whose_relay_fails_pauses_the_campaign_for_every_sender(
    fault: str,
    database_url: str,
    store: Store,
    smtp_server: SmtpTestServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The coordinator sends through a working relay, the helper through one that is down
    (or refuses its login, or, with MAILER_RELAYS, every relay is down). The helper pauses
    the campaign with the reason; the coordinator stops taking recipients within a second;
    `mailer campaign show` and the coordinator's report give the reason; nobody is lost:
    resumed through the working relay, everyone gets the message once."""
    addresses = seed_list(store, tmp_path, 120)
    campaign_id = new_campaign(store)
    # 12 s for the coordinator alone: it is still sending when the helper stops, however
    # long the helper takes to start on a loaded machine.
    smtp_server.delays["END"] = 0.2
    common: dict[str, Any] = {"database_url": database_url, "concurrency": 2, "batch_size": 10}
    good = make_settings(tmp_path, smtp_server.port, **common)
    closed = _closed_port()
    expected: list[str] = [f"cannot connect to 127.0.0.1:{closed}", "MAILER_SMTP_HOST"]
    refusing: SmtpTestServer | None = None
    if fault == "relay-down":
        bad = make_settings(tmp_path, closed, **common)
    elif fault == "relays-down":
        relays = [{"name": "backup", "host": "127.0.0.1", "port": closed}]
        bad = make_settings(tmp_path, _closed_port(), relays=relays, **common)
        expected = [f"cannot connect to 127.0.0.1:{closed}", "the relays in MAILER_RELAYS"]
    else:
        refusing = SmtpTestServer(auth=("sender", "right"))
        await refusing.start()
        bad = make_settings(
            tmp_path, refusing.port, smtp_username="sender", smtp_password="wrong", **common
        )
        expected = ["refused the login", "Fix the relay"]
    signer = load_signer(good)
    relay = _Timed(transport_for(good, store))
    coordinator = asyncio.create_task(
        run_campaign(
            settings=good,
            store=store,
            transport=relay,
            signer=signer,
            campaign_id=campaign_id,
            owner="host-a:1",
        )
    )
    try:
        await relay.sending.wait()  # the audience is frozen: there is work to share
        async with transport_for(bad, store) as broken:
            helped = await help_campaign(
                settings=bad,
                store=store,
                transport=broken,
                signer=signer,
                campaign_id=campaign_id,
                owner="host-b:2",
            )
        helper_stopped = time.monotonic()
        result = await coordinator
    finally:
        await relay.aclose()
        if refusing is not None:
            await refusing.stop()
    assert helped is not None
    reason = StopReason.BREAKER if fault == "login-refused" else StopReason.RELAY_DOWN
    assert helped.stop.reason is reason, helped.stop
    # The coordinator saw the pause at its next status check, not its own failure.
    assert result.stop.reason is StopReason.HALTED, result.stop
    assert [t for t in relay.started if t > helper_stopped + 1.0] == []
    campaign = store.get_campaign(campaign_id)
    assert campaign.status is CampaignStatus.PAUSED
    note = campaign.last_error or ""
    assert note.startswith("paused")
    assert all(part in note for part in expected), note
    assert "Seen by the sender host-b:2." in note
    if fault == "relays-down":
        assert "MAILER_SMTP_HOST" not in note
    counts = store.delivery_counts(campaign_id)
    assert counts.sending == counts.failed == counts.unknown == counts.bounced == 0
    assert counts.sent == len(smtp_server.messages) < len(addresses)
    assert store.batch_holders(campaign_id) == []

    print_result(result)  # what `mailer send` / `campaign resume` print at the end
    printed = capsys.readouterr().out.replace("\n", " ")
    assert f"Status: paused — {note}" in printed

    shown = await asyncio.to_thread(
        run_mailer,
        cli_environment(tmp_path, smtp_server.port, MAILER_DATABASE_URL=database_url),
        tmp_path,
        "campaign",
        "show",
        str(campaign_id),
    )
    assert shown.returncode == 0, shown.stderr
    assert f"note:       {note}" in shown.stdout.replace("\n", " ")

    smtp_server.delays.clear()
    resumed = await send(good, store, campaign_id, resume=True)
    assert resumed.campaign.status is CampaignStatus.FINISHED
    assert Counter(smtp_server.recipients) == Counter(addresses)
    assert store.delivery_counts(campaign_id).sent == len(addresses)
    assert {r.status for r in store.iter_report(campaign_id)} == {DeliveryStatus.SENT}
