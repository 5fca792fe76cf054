"""The campaign engine against a real aiosmtpd server: what the server received, what the
ledger holds."""

from __future__ import annotations

import asyncio
import time
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import select

from campaign_support import make_settings, new_campaign, seed_list, send
from mailer.delivery.memory import MemoryTransport
from mailer.errors import CampaignError
from mailer.models import (
    CampaignStatus,
    DeliveryStatus,
    Outcome,
    OutgoingMessage,
    SubscriberStatus,
    UnsubscribeSource,
)
from mailer.sending.engine import StopReason
from mailer.sending.run import RunResult, run_campaign
from mailer.store import Store
from mailer.store.schema import deliveries, suppressions
from mailer.store.signer import load_signer
from smtp_server import SmtpTestServer, TlsFiles


def ledger(store: Store, campaign_id: int) -> dict[str, tuple[str, int]]:
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(deliveries.c.email, deliveries.c.status, deliveries.c.attempts).where(
                deliveries.c.campaign_id == campaign_id
            )
        )
        return {row.email: (row.status, row.attempts) for row in rows}


async def test_every_recipient_delivered_once_over_few_connections(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """200 recipients, 3 connections: each gets one well-formed message; the ledger says sent."""
    addresses = seed_list(store, tmp_path, 200)
    settings = make_settings(tmp_path, smtp_server.port, concurrency=3)
    campaign_id = new_campaign(store)
    result = await send(settings, store, campaign_id)
    assert result.reason is StopReason.FINISHED
    assert result.campaign.status is CampaignStatus.FINISHED
    assert sorted(smtp_server.recipients) == sorted(addresses)
    assert smtp_server.peak_connections <= 3
    assert smtp_server.connections_total <= 3
    assert set(ledger(store, campaign_id).values()) == {("sent", 1)}
    message = message_from_bytes(smtp_server.messages[0].data, policy=policy.default)
    assert message["List-Unsubscribe"].startswith("<https://mailer.example.org/u/")
    ids = {m.data.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0] for m in smtp_server.messages}
    assert len(ids) == 200


async def test_temporary_failure_is_deferred_then_delivered(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """A 450 defers the row with a retry time; the next run after it delivers it, once."""
    seed_list(store, tmp_path, 5)
    smtp_server.rcpt_replies["person00002@example.org"] = "450 4.2.1 Mailbox busy"
    settings = make_settings(tmp_path, smtp_server.port, retry_horizon=0, retry_delay=0.3)
    campaign_id = new_campaign(store)
    first = await send(settings, store, campaign_id)
    assert first.reason is StopReason.WAITING
    assert first.counts.deferred == 1
    assert ledger(store, campaign_id)["person00002@example.org"] == ("deferred", 1)
    assert store.next_retry_at(campaign_id) is not None
    smtp_server.reset_faults()
    await asyncio.sleep(0.35)
    second = await send(settings, store, campaign_id)
    assert second.reason is StopReason.FINISHED
    assert ledger(store, campaign_id)["person00002@example.org"] == ("sent", 2)
    assert smtp_server.recipients.count("person00002@example.org") == 1
    assert len(smtp_server.recipients) == 5


async def test_retries_within_the_horizon_happen_in_the_same_run(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """A connection dropped mid-DATA is retried on a fresh connection and delivered."""
    seed_list(store, tmp_path, 6)
    smtp_server.drop_mid_data = 1
    settings = make_settings(tmp_path, smtp_server.port, concurrency=1, retry_delay=0.1)
    campaign_id = new_campaign(store)
    result = await send(settings, store, campaign_id)
    assert result.reason is StopReason.FINISHED, result.stop
    assert sorted(set(smtp_server.recipients)) == sorted(smtp_server.recipients)
    assert len(smtp_server.recipients) == 6
    attempts = sorted(a for _, a in ledger(store, campaign_id).values())
    assert attempts == [1, 1, 1, 1, 1, 2]


async def test_slow_server_times_out_and_is_retried(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """No reply to MAIL within the timeout: deferred, then delivered once the server is back."""
    seed_list(store, tmp_path, 2)
    smtp_server.delays["MAIL"] = 1.5
    settings = make_settings(
        tmp_path, smtp_server.port, smtp_timeout=0.3, retry_delay=0.1, retry_horizon=0
    )
    campaign_id = new_campaign(store)
    first = await send(settings, store, campaign_id)
    assert first.counts.deferred == 2
    smtp_server.reset_faults()
    # The retry falls due 0.1 s after each deferral; the second run waits for it (a horizon
    # of 30 s) rather than racing the clock (with horizon 0 a loaded machine stopped it
    # as WAITING when the retry was a few milliseconds away).
    second = await send(settings.model_copy(update={"retry_horizon": 30.0}), store, campaign_id)
    assert second.reason is StopReason.FINISHED
    assert sorted(smtp_server.recipients) == ["person00000@example.org", "person00001@example.org"]


async def test_hard_bounce_suppresses_and_policy_rejection_does_not(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """550 5.1.1 -> bounced + suppressed for every later campaign; 550 5.7.1 -> failed only."""
    seed_list(store, tmp_path, 4)
    smtp_server.rcpt_replies["person00001@example.org"] = "550 5.1.1 No such user"
    smtp_server.rcpt_replies["person00002@example.org"] = "550 5.7.1 Rejected by policy"
    settings = make_settings(tmp_path, smtp_server.port)
    campaign_id = new_campaign(store)
    result = await send(settings, store, campaign_id)
    assert (result.counts.sent, result.counts.bounced, result.counts.failed) == (2, 1, 1)
    bounced = store.get_subscriber("person00001@example.org")
    assert bounced.status is SubscriberStatus.BOUNCED
    assert store.get_subscriber("person00002@example.org").status is SubscriberStatus.SUBSCRIBED
    with store.engine.connect() as connection:
        reasons = connection.execute(select(suppressions.c.reason, suppressions.c.source)).all()
    assert reasons == [("bounced", "bounce")]
    smtp_server.reset_faults()
    again = await send(settings, store, new_campaign(store))
    assert again.counts.total == 3  # the bounced address is not in the next snapshot


async def test_unsubscribe_after_snapshot_is_skipped(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """Someone who leaves after the audience was frozen is skipped, not mailed."""
    seed_list(store, tmp_path, 5)
    campaign_id = new_campaign(store)
    list_id = store.list_id("members")
    assert store.snapshot_audience(campaign_id, list_id) == 5
    leaver = store.get_subscriber_id("person00003@example.org")
    store.unsubscribe(leaver, list_id, source=UnsubscribeSource.ONE_CLICK)
    result = await send(make_settings(tmp_path, smtp_server.port), store, campaign_id)
    assert (result.counts.sent, result.counts.skipped) == (4, 1)
    assert "person00003@example.org" not in smtp_server.recipients
    assert ledger(store, campaign_id)["person00003@example.org"] == ("skipped", 0)


async def test_rate_limit_spaces_the_messages(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """At 20/s, 30 messages take at least 29/20 s, however many connections there are."""
    seed_list(store, tmp_path, 30)
    settings = make_settings(tmp_path, smtp_server.port, rate_limit=20.0, concurrency=8)
    started = time.monotonic()
    result = await send(settings, store, new_campaign(store))
    elapsed = time.monotonic() - started
    assert result.counts.sent == 30
    assert elapsed >= 29 / 20 * 0.98


async def test_a_refused_sender_pauses_and_tries_nobody(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """A 553 to MAIL FROM (the session's problem: the same sender for every message)
    pauses the campaign at once with the error's own advice instead of "Fix the relay",
    and no row is counted an attempt, however often it is tried again (as a worker does
    after each cool-down): otherwise, after MAILER_MAX_ATTEMPTS pauses, recipients who
    were never tried would be given up as failed. Once the relay takes them, everyone
    gets one."""
    seed_list(store, tmp_path, 20)
    smtp_server.mail_reply = "553 5.7.1 Sender address rejected: not owned by user"
    campaign_id = new_campaign(store)
    settings = make_settings(tmp_path, smtp_server.port, max_attempts=2)
    for _ in range(3):  # more pauses than max_attempts
        result = await send(settings, store, campaign_id)
        assert result.reason is StopReason.BREAKER
        assert result.campaign.status is CampaignStatus.PAUSED
        assert "refused the sender" in result.message
        assert "Check MAILER_FROM_ADDRESS" in result.message
        assert "Fix the relay" not in result.message
        assert f"Then `mailer campaign resume {campaign_id}`" in result.message
        assert set(ledger(store, campaign_id).values()) == {("queued", 0)}
        store.set_campaign_status(
            campaign_id, CampaignStatus.SENDING, only_from=[CampaignStatus.PAUSED]
        )
    assert smtp_server.messages == []
    smtp_server.mail_reply = None
    resumed = await send(settings, store, campaign_id)
    assert resumed.reason is StopReason.FINISHED
    assert sorted(smtp_server.recipients) == sorted(ledger(store, campaign_id))
    assert len(smtp_server.recipients) == 20


async def test_a_multi_line_refusal_makes_a_one_line_pause_note(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """A relay's reply of several lines (RFC 5321 4.2.1) is joined into one line in the
    campaign's note: the campaign list and the dashboard show notes as single lines."""
    seed_list(store, tmp_path, 3)
    smtp_server.mail_reply = (
        "553-5.7.1 Sender address rejected:\r\n553 5.7.1 not owned by user invitations"
    )
    campaign_id = new_campaign(store)
    result = await send(make_settings(tmp_path, smtp_server.port), store, campaign_id)
    assert result.reason is StopReason.BREAKER
    assert "\n" not in result.message
    assert "Sender address rejected: 5.7.1 not owned by user invitations" in result.message
    assert store.get_campaign(campaign_id).last_error == result.message


async def test_a_size_refusal_pauses_with_what_to_do_and_counts_the_attempt(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """A 552 5.3.4 to MAIL FROM pauses with the advice to make the message smaller. It
    judged the message (sizes differ a little by recipient), so the messages tried count
    an attempt: deferred, not held at the head of the queue forever."""
    seed_list(store, tmp_path, 20)
    smtp_server.mail_reply = "552 5.3.4 Message size exceeds fixed maximum message size"
    campaign_id = new_campaign(store)
    result = await send(make_settings(tmp_path, smtp_server.port), store, campaign_id)
    assert result.reason is StopReason.BREAKER
    assert "refuses messages of this size" in result.message
    assert "Make the message smaller" in result.message
    tried = [row for row in ledger(store, campaign_id).values() if row != ("queued", 0)]
    assert tried
    assert set(tried) == {("deferred", 1)}
    assert smtp_server.messages == []


async def test_a_login_refused_for_one_recipient_does_not_hold_the_campaign(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """A relay that wants a login (530) at RCPT for one recipient only: each run pauses,
    but that recipient's attempts count, so it is not first in line again at once; the
    others are all sent, and it is given up after MAILER_MAX_ATTEMPTS (not bounced)."""
    addresses = seed_list(store, tmp_path, 10)
    refused = addresses[0]
    smtp_server.rcpt_replies[refused] = "530 5.7.0 Authentication required for this domain"
    campaign_id = new_campaign(store)
    settings = make_settings(tmp_path, smtp_server.port, max_attempts=2, retry_delay=0.0)
    for _ in range(6):
        result = await send(settings, store, campaign_id)
        if result.reason is StopReason.FINISHED:
            break
        assert result.reason is StopReason.BREAKER
        store.set_campaign_status(
            campaign_id, CampaignStatus.SENDING, only_from=[CampaignStatus.PAUSED]
        )
    assert result.reason is StopReason.FINISHED
    rows = ledger(store, campaign_id)
    assert rows[refused] == ("failed", 2)
    assert sorted(smtp_server.recipients) == sorted(a for a in addresses if a != refused)


async def test_breaker_pauses_when_the_relay_refuses_everything(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """Every MAIL answered 421: the campaign pauses with a clear reason, most rows untouched."""
    seed_list(store, tmp_path, 100)
    smtp_server.mail_reply = "451 4.3.0 Temporary local problem"
    settings = make_settings(tmp_path, smtp_server.port, breaker_window=10, concurrency=2)
    campaign_id = new_campaign(store)
    result = await send(settings, store, campaign_id)
    assert result.reason is StopReason.BREAKER
    assert result.campaign.status is CampaignStatus.PAUSED
    assert "of the last 10 attempts failed" in result.message
    assert "mailer campaign resume" in result.message
    assert result.counts.queued >= 80
    assert result.counts.sending == 0
    smtp_server.reset_faults()
    store.set_campaign_status(
        campaign_id, CampaignStatus.SENDING, only_from=[CampaignStatus.PAUSED]
    )
    await asyncio.sleep(0.25)
    resumed = await send(settings, store, campaign_id)
    assert resumed.reason is StopReason.FINISHED
    assert len(smtp_server.recipients) == 100
    assert len(set(smtp_server.recipients)) == 100


async def send_over_starttls(
    store: Store, tls_files: TlsFiles, tmp_path: Path, *, password: str
) -> tuple[SmtpTestServer, int, RunResult]:
    """A campaign to a server that requires STARTTLS (trustme CA) and AUTH as org/pw."""
    async with SmtpTestServer(tls=tls_files, require_starttls=True, auth=("org", "pw")) as server:
        settings = make_settings(
            tmp_path,
            server.port,
            smtp_security="starttls",
            smtp_ca_file=tls_files.ca_file,
            smtp_username="org",
            smtp_password=password,
        )
        campaign_id = new_campaign(store)
        result = await send(settings, store, campaign_id)
    return server, campaign_id, result


async def test_starttls_and_auth_from_settings(
    store: Store, tls_files: TlsFiles, tmp_path: Path
) -> None:
    """STARTTLS with certificate checks against a trustme CA, then AUTH, then delivery."""
    seed_list(store, tmp_path, 3)
    server, _, result = await send_over_starttls(store, tls_files, tmp_path, password="pw")
    assert result.counts.sent == 3
    assert server.logins
    assert set(server.logins) == {"org"}  # every connection logged in, as org
    assert len(server.logins) == server.connections_total
    assert len(server.messages) == 3


async def test_bad_credentials_pause_instead_of_failing_everyone(
    store: Store, tls_files: TlsFiles, tmp_path: Path
) -> None:
    """A 535 at login pauses the campaign at once: no recipient is marked failed, and the
    wrong password was tried once, not once per connection (a relay may lock the account
    after a few)."""
    seed_list(store, tmp_path, 20)
    server, campaign_id, result = await send_over_starttls(
        store, tls_files, tmp_path, password="wrong"
    )
    assert server.refused_logins == ["org"]
    assert result.reason is StopReason.BREAKER
    assert result.campaign.status is CampaignStatus.PAUSED
    counts = store.delivery_counts(campaign_id)
    assert counts.failed == 0
    assert counts.sent == 0
    assert counts.queued + counts.deferred == 20
    assert not server.messages
    statuses = {status for status, _ in ledger(store, campaign_id).values()}
    assert DeliveryStatus.SENDING.value not in statuses


async def test_daily_cap_counts_earlier_sends_and_stops_instead_of_sleeping(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """A cap of 5 a day, 3 already sent today by another campaign: 2 more go, then the run
    stops with the time sending may go on, leaving the rest queued for a worker."""
    seed_list(store, tmp_path, 3, list_name="first")
    seed_list(store, tmp_path, 8, list_name="second")
    settings = make_settings(tmp_path, smtp_server.port, daily_limit=5, concurrency=1)
    await send(settings, store, new_campaign(store, list_name="first"))
    second = new_campaign(store, list_name="second")
    result = await send(settings, store, second)
    assert result.reason is StopReason.CAPPED
    assert "the daily cap is reached; sending can go on at" in result.message
    assert result.campaign.status is CampaignStatus.SENDING
    assert result.campaign.lease_owner is None
    counts = store.delivery_counts(second)
    assert (counts.sent, counts.queued, counts.sending) == (2, 6, 0)
    assert len(smtp_server.messages) == 5


async def test_a_worker_stopping_mid_send_hands_the_campaign_on_and_says_so(
    store: Store, tmp_path: Path
) -> None:
    """A worker asked to stop (interrupted_status SENDING) leaves the campaign sending for
    another worker, and its note says so rather than "resume sends the rest" only (a
    trial's second worker had already taken over when the first said that)."""
    seed_list(store, tmp_path, 60)
    settings = make_settings(tmp_path, 2525, concurrency=2)
    campaign_id = new_campaign(store)
    sending = asyncio.Event()

    def accept(_message: OutgoingMessage) -> Outcome:
        sending.set()
        return Outcome(DeliveryStatus.SENT, 250, "2.0.0 ok")

    stop = asyncio.Event()
    run = asyncio.create_task(
        run_campaign(
            settings=settings,
            store=store,
            transport=MemoryTransport(accept, delay=0.05),
            signer=load_signer(settings),
            campaign_id=campaign_id,
            stop_requested=stop,
            interrupted_status=CampaignStatus.SENDING,
        )
    )
    await asyncio.wait_for(sending.wait(), 30)
    stop.set()
    result = await asyncio.wait_for(run, 30)
    assert result.reason is StopReason.INTERRUPTED
    assert result.campaign.status is CampaignStatus.SENDING
    assert result.message == (
        "stopped on request (this worker is stopping); another running `mailer worker` goes "
        f"on with it, or `mailer campaign resume {campaign_id}`."
    )


async def test_pause_while_sending_stops_the_sender_and_resume_finishes(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """`campaign pause` during a send: the sender notices at its next heartbeat, finishes
    what is in flight, releases the campaign as paused; resuming sends only the rest."""
    addresses = seed_list(store, tmp_path, 60)
    settings = make_settings(tmp_path, smtp_server.port, rate_limit=40.0, lease_seconds=1.2)
    campaign_id = new_campaign(store)
    sending = asyncio.create_task(send(settings, store, campaign_id))
    while len(smtp_server.messages) < 10:  # noqa: ASYNC110 - the recording is a plain list
        await asyncio.sleep(0.02)
    assert store.set_campaign_status(
        campaign_id, CampaignStatus.PAUSED, only_from=[CampaignStatus.SENDING]
    )
    result = await sending
    assert result.reason is StopReason.HALTED
    assert result.campaign.status is CampaignStatus.PAUSED
    assert result.message == (  # which of pause or cancel, and what goes on
        f"stopped: the campaign was paused meanwhile; `mailer campaign resume {campaign_id}` "
        "sends the rest."
    )
    assert result.campaign.lease_owner is None
    assert 10 <= len(smtp_server.messages) < 60
    assert store.delivery_counts(campaign_id).sending == 0
    store.set_campaign_status(
        campaign_id, CampaignStatus.SENDING, only_from=[CampaignStatus.PAUSED]
    )
    resumed = await send(settings, store, campaign_id)
    assert resumed.reason is StopReason.FINISHED
    assert sorted(smtp_server.recipients) == sorted(addresses)


async def test_sending_the_same_event_again_resumes_a_paused_campaign(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """After Ctrl-C (paused), the very same `mailer send` goes on with that campaign."""
    from campaign_support import EVENT
    from mailer.campaigns.lifecycle import start_or_resume
    from mailer.message.event import load_event

    seed_list(store, tmp_path, 3)
    campaign_id = new_campaign(store)
    store.set_campaign_status(campaign_id, CampaignStatus.PAUSED)
    choice = start_or_resume(store, event_path=EVENT, event=load_event(EVENT), list_name="members")
    assert choice.resumed
    assert choice.campaign.id == campaign_id
    settings = make_settings(tmp_path, smtp_server.port)
    with pytest.raises(CampaignError, match="is paused"):  # a worker may not take it
        await send(settings, store, campaign_id)
    assert store.get_campaign(campaign_id).status is CampaignStatus.PAUSED
    result = await send(settings, store, campaign_id, resume=True)
    assert result.reason is StopReason.FINISHED
    assert len(smtp_server.messages) == 3


def test_a_campaign_being_started_is_not_due_for_a_worker(store: Store, tmp_path: Path) -> None:
    """`mailer send` creates its campaign already leased to itself: a running worker
    cannot take it in the moment between creation and the sender's claim."""
    from campaign_support import EVENT
    from mailer.campaigns.lifecycle import start_or_resume
    from mailer.message.event import load_event

    seed_list(store, tmp_path, 2)
    event = load_event(EVENT)
    held = start_or_resume(
        store, event_path=EVENT, event=event, list_name="members", owner="host:7"
    )
    assert held.campaign.lease_owner == "host:7"
    assert store.due_campaigns() == []
    unheld = start_or_resume(store, event_path=EVENT, event=event, list_name="members", new=True)
    assert store.due_campaigns() == [unheld.campaign.id]
