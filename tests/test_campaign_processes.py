"""Several sender processes beyond `mailer send` (issue 15).

`mailer campaign resume ID` and `mailer campaign send-now ID` take `--processes N` as
`mailer send` does: run for real, a helper process claims batches of the campaign beside
the command's own process. And a helper that stops because its relay is down, its breaker
tripped (a refused login) pauses the campaign for every sender, with the reason
`mailer campaign show` prints, as the coordinator does when it sees that itself; a
`mailer worker` tries it again by itself after the cool-down, as it does a pause the
coordinator made (an error's pause waits for a person, for both).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import lingering_helper
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
from mailer.campaigns.scheduler import Scheduler
from mailer.campaigns.senders import Children
from mailer.cli.send_cmd import print_result
from mailer.clock import utcnow
from mailer.config import Settings
from mailer.delivery.base import Transport
from mailer.delivery.memory import MemoryTransport
from mailer.message.event import load_event
from mailer.models import CampaignStatus, DeliveryStatus, Outcome, OutgoingMessage
from mailer.sending.engine import Stop, StopReason
from mailer.sending.helping import HelpResult, help_campaign, pause_everyone
from mailer.sending.recovery import is_dead_local_process
from mailer.sending.relays import transport_for
from mailer.sending.run import RunResult, cooldown, run_campaign
from mailer.store import Store
from mailer.store.schema import deliveries
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


def _start_mailer(env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen[str]:
    """`mailer ARGS` in the background, with no terminal on stdin; the caller waits."""
    return subprocess.Popen(
        mailer_command(*args),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _sender_pids(store: Store, campaign_id: int) -> set[int]:
    """The processes holding batches of the campaign (owners are host:pid)."""
    return {int(h.owner.rpartition(":")[2]) for h in store.batch_holders(campaign_id)}


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
        process = _start_mailer(
            env, tmp_path, "campaign", command, str(campaign_id), "--yes", "--processes", "2"
        )
        try:
            senders: set[int] = set()

            def both_take_part() -> bool:
                senders.update(_sender_pids(store, campaign_id))
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
    assert f"; {len(addresses)} sent in this run" in out  # the helper's too
    assert store.get_campaign(campaign_id).status is CampaignStatus.FINISHED


def test_a_helper_killed_mid_send_is_taken_over_at_once(
    database_url: str, store: Store, tmp_path: Path
) -> None:
    """kill -9 of the helper of `mailer send --processes 2` while it sends: until the
    command collects it, it is a zombie, which kill(pid, 0) still finds, so its batch
    waited for its lease (30 s by default) and the command ended with its rows unsent
    (an organiser's trial). Now the command says the helper ended and takes the batch
    over at once: the lease here is 600 s, so waiting for it would time out. Every
    recipient is received once, but for rows unknown (at the relay when it died: at most
    its 2 connections), and the command says how many were sent."""
    addresses = seed_list(store, tmp_path, 120)
    with SmtpTestServer() as server:
        server.delays["END"] = 0.05  # 2 connections each: about 80 messages/s together
        env = cli_environment(
            tmp_path,
            server.port,
            MAILER_DATABASE_URL=database_url,
            MAILER_RATE_LIMIT="1000",
            MAILER_CONCURRENCY="2",
            MAILER_BATCH_SIZE="10",
            MAILER_LEASE_SECONDS="600",
            MAILER_POLL_INTERVAL="0.2",
        )
        process = _start_mailer(
            env, tmp_path, "send", str(EVENT), "--list", "members", "--yes", "--processes", "2"
        )
        try:
            helpers: list[int] = []

            def a_helper_holds_a_batch() -> bool:
                helpers[:] = sorted(_sender_pids(store, 1) - {process.pid})
                return bool(helpers) or process.poll() is not None

            _wait_until(a_helper_holds_a_batch, 60, "a helper process to claim a batch")
            assert helpers, "the command ended before its helper took part"
            os.kill(helpers[0], signal.SIGKILL)
            out, err = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        received = Counter(server.recipients)
    with store.engine.connect() as connection:
        selected = connection.execute(
            select(deliveries.c.email, deliveries.c.status).where(deliveries.c.campaign_id == 1)
        )
        rows = {str(email): str(status) for email, status in selected}
    unknown = {email for email, status in rows.items() if status == "unknown"}
    assert set(rows.values()) <= {"sent", "unknown"}, rows
    assert len(unknown) <= 2
    assert {a for a in addresses if received[a] != 1} <= unknown
    assert max(received.values()) == 1
    assert store.get_campaign(1).status is CampaignStatus.FINISHED
    assert process.returncode == (1 if unknown else 0), (out, err)
    assert f"{len(addresses) - len(unknown)} sent" in out
    assert f"A helper sender process (pid {helpers[0]}) ended (killed by SIGKILL)" in err


async def test_the_coordinators_result_counts_the_helpers_messages(
    store: Store, database_url: str, tmp_path: Path
) -> None:
    """A coordinator (as a `mailer worker` runs it) and a helper on another machine share
    40 recipients: the coordinator's result, its last progress call and so the worker's
    "finished" log line count all 40 sent in its run, not only its own (a trial's two
    workers logged sent=1000 of 2000 for a campaign that had sent 2000)."""
    seed_list(store, tmp_path, 40)
    settings = make_settings(tmp_path, 2525, database_url=database_url, concurrency=2, batch_size=4)
    campaign_id = new_campaign(store)
    signer = load_signer(settings)
    sending = asyncio.Event()

    def accept(_message: OutgoingMessage) -> Outcome:
        sending.set()
        return Outcome(DeliveryStatus.SENT, 250, "2.0.0 ok")

    first, second = MemoryTransport(accept, delay=0.02), MemoryTransport(delay=0.02)
    shown: list[int] = []
    coordinator = asyncio.create_task(
        run_campaign(
            settings=settings,
            store=store,
            transport=first,
            signer=signer,
            campaign_id=campaign_id,
            owner="host-a:1",
            on_progress=lambda progress: shown.append(progress.counts.sent),
        )
    )
    await sending.wait()  # the audience is frozen: there is work to share
    await help_campaign(
        settings=settings,
        store=store,
        transport=second,
        signer=signer,
        campaign_id=campaign_id,
        owner="host-b:2",
    )
    result = await coordinator
    assert second.sent, "the helper sent nothing: nothing to count"
    assert len(first.sent) + len(second.sent) == 40
    assert result.progress.counts.sent == result.counts.sent == 40
    assert result.progress.sent_this_run == 40
    assert shown[-1] == 40


def test_a_sender_killed_and_not_yet_collected_counts_as_dead() -> None:
    """A process of this machine killed with kill -9 whose parent has not collected it (a
    zombie) is dead to the others, who take its batches over at once; a live one is not,
    nor a process of another machine, whose lease decides."""
    child = subprocess.Popen(["sleep", "60"])
    try:
        me = socket.gethostname()
        assert not is_dead_local_process(f"{me}:{child.pid}")
        os.kill(child.pid, signal.SIGKILL)
        _wait_until(lambda: is_dead_local_process(f"{me}:{child.pid}"), 10, "the zombie")
        assert not is_dead_local_process(f"elsewhere.example.org:{child.pid}")
    finally:
        child.kill()
        child.wait()
    assert is_dead_local_process(f"{me}:{child.pid}")  # collected: no such process


async def test_watching_the_helpers_reports_one_killed_not_one_that_ended_by_itself() -> None:
    """Children.watch collects the helpers that end and reports those that died (here,
    SIGKILL), not one that ended by itself with exit status 0 (it paused the campaign for
    its relay, or logged why it stopped): saying that the others take over its
    recipients would be wrong then (a review)."""
    children = Children()
    children.start(lingering_helper.end_at_once, count=1)
    children.start(lingering_helper.linger, count=1)
    quiet, killed = children.processes
    reported: list[tuple[int, str]] = []
    watching = asyncio.create_task(
        children.watch(lambda pid, how: reported.append((pid, how)), every=0.05)
    )
    try:
        await asyncio.to_thread(quiet.join, 60)
        assert quiet.exitcode == 0
        assert killed.pid is not None
        os.kill(killed.pid, signal.SIGKILL)
        for _ in range(600):
            if reported:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # a few more rounds: the quiet one would show by now
    finally:
        watching.cancel()
        children.stop()
        children.join(10)
    assert reported == [(killed.pid, "killed by SIGKILL")]


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


async def _helper_stops(
    good: Settings, bad: Settings, store: Store, campaign_id: int
) -> tuple[HelpResult, RunResult, _Timed, float]:
    """The coordinator ("host-a:1") sends `campaign_id` through `good`'s relay; once it
    is sending, a helper ("host-b:2") joins through `bad`'s, until the helper stops and
    then the coordinator. Their results, the coordinator's relay, and when (monotonic)
    the helper stopped."""
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
        if not coordinator.done():
            coordinator.cancel()
            with contextlib.suppress(BaseException):
                await coordinator
        await relay.aclose()
    assert helped is not None
    return helped, result, relay, helper_stopped


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
        expected = ["refused the login", "Check MAILER_SMTP_USERNAME"]  # the error's hint
    try:
        helper_started = utcnow()
        helped, result, relay, helper_stopped = await _helper_stops(good, bad, store, campaign_id)
        helper_ended = utcnow()
    finally:
        if refusing is not None:
            await refusing.stop()
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
    # A relay pause, as if the coordinator had seen it: a worker tries the campaign again
    # after the cool-down (MAILER_BREAKER_COOLDOWN, 60 s: not yet), the streak counted.
    rest = cooldown(bad, 0)
    assert campaign.relay_pauses == 1
    assert campaign.retry_at is not None
    assert helper_started + rest <= campaign.retry_at <= helper_ended + rest
    assert note.endswith("A running `mailer worker` tries again in 60 s."), note
    assert campaign_id not in store.due_campaigns()
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
    assert resumed.campaign.retry_at is None
    assert resumed.campaign.relay_pauses == 0
    assert Counter(smtp_server.recipients) == Counter(addresses)
    assert store.delivery_counts(campaign_id).sent == len(addresses)
    assert {r.status for r in store.iter_report(campaign_id)} == {DeliveryStatus.SENT}


async def test_a_worker_takes_again_by_itself_a_campaign_a_helper_paused_for_the_relay(
    database_url: str, store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """Once the cool-down of a helper's relay pause is over, a `mailer worker` takes the
    campaign again by itself, as it does one its coordinator paused for the relay, and
    sends the rest through the working relay: everyone gets the message once, and the
    streak of relay pauses ends."""
    addresses = seed_list(store, tmp_path, 60)
    campaign_id = new_campaign(store)
    smtp_server.delays["END"] = 0.2  # the coordinator is still sending when the helper stops
    common: dict[str, Any] = {"database_url": database_url, "concurrency": 2, "batch_size": 10}
    good = make_settings(tmp_path, smtp_server.port, **common)
    # A millisecond's rest: the test waits for the pause's own retry time to pass (a fixed
    # instant in the store, so no race), not for a guessed duration.
    bad = make_settings(tmp_path, _closed_port(), breaker_cooldown=0.001, **common)
    helped, _, _, _ = await _helper_stops(good, bad, store, campaign_id)
    assert helped.stop.reason is StopReason.RELAY_DOWN, helped.stop
    paused = store.get_campaign(campaign_id)
    assert paused.status is CampaignStatus.PAUSED
    assert paused.relay_pauses == 1
    assert paused.retry_at is not None, paused.last_error
    left = (paused.retry_at - utcnow()).total_seconds()
    await asyncio.sleep(max(left, 0.0) + 0.01)  # past it: due from now on
    assert store.due_campaigns() == [campaign_id]

    smtp_server.delays.clear()
    worker = Scheduler(
        settings=good,
        store=store,
        signer=load_signer(good),
        transport_factory=lambda settings: transport_for(settings, store),
        owner="host-c:3",
    )
    await worker.poll_once()
    await asyncio.gather(*worker._running.values())
    done = store.get_campaign(campaign_id)
    assert done.status is CampaignStatus.FINISHED, done.last_error
    assert done.retry_at is None
    assert done.relay_pauses == 0
    assert Counter(smtp_server.recipients) == Counter(addresses)
    assert {r.status for r in store.iter_report(campaign_id)} == {DeliveryStatus.SENT}


def _sending(store: Store, tmp_path: Path) -> int:
    """A campaign under way (claimed by a coordinator, "host-a:1")."""
    seed_list(store, tmp_path, 2)
    campaign_id = new_campaign(store)
    assert store.claim_campaign(campaign_id, owner="host-a:1", lease=timedelta(seconds=30))
    return campaign_id


def test_a_helpers_relay_pause_doubles_the_cooldown_of_a_streak(
    store: Store, tmp_path: Path
) -> None:
    """The campaign's second relay pause in a row (the first was the coordinator's, then a
    worker took it again) rests twice as long, whoever saw it, as for the coordinator."""
    settings = make_settings(tmp_path, 2525, breaker_cooldown=60, breaker_cooldown_max=600)
    campaign_id = _sending(store, tmp_path)
    store.release_campaign(
        campaign_id, owner="host-a:1", status=CampaignStatus.PAUSED, retry_after=timedelta(0)
    )
    assert store.claim_campaign(
        campaign_id, owner="host-a:1", lease=timedelta(seconds=30), retry_paused=True
    )
    streak = store.get_campaign(campaign_id).relay_pauses
    assert streak == 1
    before = utcnow()
    stop = Stop(StopReason.BREAKER, "the relay refused the login")
    assert pause_everyone(store, settings, campaign_id, stop, "host-b:2", relay_pauses=streak)
    after = utcnow()
    campaign = store.get_campaign(campaign_id)
    assert campaign.status is CampaignStatus.PAUSED
    assert campaign.relay_pauses == 2
    assert campaign.retry_at is not None
    assert before + timedelta(seconds=120) <= campaign.retry_at <= after + timedelta(seconds=120)
    assert cooldown(settings, 1) == timedelta(seconds=120)
    assert campaign_id not in store.due_campaigns()


def test_a_helpers_pause_for_an_error_waits_for_a_person(store: Store, tmp_path: Path) -> None:
    """As for the coordinator: an error is no relay trouble, and nobody retries it."""
    settings = make_settings(tmp_path, 2525)
    campaign_id = _sending(store, tmp_path)
    stop = Stop(StopReason.ERROR, "writing the journal")
    assert pause_everyone(store, settings, campaign_id, stop, "host-b:2", relay_pauses=0)
    campaign = store.get_campaign(campaign_id)
    assert campaign.status is CampaignStatus.PAUSED
    assert campaign.retry_at is None
    assert campaign.relay_pauses == 0
    assert "tries again" not in (campaign.last_error or "")


def test_a_pause_by_a_person_meanwhile_wins_over_a_helpers_relay_pause(
    store: Store, tmp_path: Path
) -> None:
    """The organiser paused (or cancelled) the campaign just before the helper's relay
    pause: theirs stands, with no automatic retry and their note."""
    settings = make_settings(tmp_path, 2525)
    paused = _sending(store, tmp_path)
    lifecycle.pause(store, paused)
    note = store.get_campaign(paused).last_error
    cancelled = new_campaign(store)
    store.set_campaign_status(cancelled, CampaignStatus.CANCELLED)
    stop = Stop(StopReason.RELAY_DOWN, "cannot connect to 127.0.0.1:1")
    for campaign_id in (paused, cancelled):
        assert not pause_everyone(store, settings, campaign_id, stop, "host-b:2", relay_pauses=0)
        campaign = store.get_campaign(campaign_id)
        assert campaign.retry_at is None
        assert campaign.relay_pauses == 0
        assert campaign_id not in store.due_campaigns()
    assert store.get_campaign(paused).status is CampaignStatus.PAUSED
    assert store.get_campaign(paused).last_error == note
    assert store.get_campaign(cancelled).status is CampaignStatus.CANCELLED


def test_only_a_pause_from_sending_can_be_a_relay_pause(store: Store, tmp_path: Path) -> None:
    """The store refuses a retry on anything but the pause of a campaign still sending,
    which a person's pause or cancel would otherwise lose to."""
    campaign_id = _sending(store, tmp_path)
    rest = timedelta(seconds=60)
    with pytest.raises(ValueError, match="relay pause"):
        store.set_campaign_status(campaign_id, CampaignStatus.PAUSED, retry_after=rest)
    with pytest.raises(ValueError, match="relay pause"):
        store.set_campaign_status(
            campaign_id,
            CampaignStatus.CANCELLED,
            only_from=[CampaignStatus.SENDING],
            retry_after=rest,
        )
    assert store.get_campaign(campaign_id).status is CampaignStatus.SENDING
