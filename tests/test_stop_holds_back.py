"""A stop (signal, pause, cancel, breaker) holds back every message that has not reached
the relay, including one waiting for a session behind another message (its envelope may
already follow that message's final dot: EngineOptions.ahead, delivery/smtp.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from campaign_support import make_settings, new_campaign, seed_list, send
from mailer.models import CampaignStatus, DeliveryStatus
from mailer.sending.engine import StopReason
from mailer.sending.shared_rate import GLOBAL_BUDGET
from mailer.store import Store
from scripted_relay import Relay, Start
from smtp_server import SmtpTestServer
from test_shared_rate import counted


async def second_envelope_behind_the_first_dot(relay: Relay) -> None:
    """Until the relay has read the first message's dot with the next MAIL FROM after it."""
    while not (
        relay.connections and b"\r\n.\r\nMAIL FROM:" in b"".join(relay.connections[0].segments)
    ):
        relay.arrived.clear()
        await relay.arrived.wait()


async def test_a_stop_holds_back_the_message_waiting_behind_the_one_at_the_relay(
    store: Store, start_relay: Start, tmp_path: Path
) -> None:
    """One connection: the first message's dot is at the relay, which holds its reply;
    the second message's envelope went right after that dot. A stop comes: the first is
    finished and recorded, the second's body never goes and it is queued again, untried."""
    hold = asyncio.Event()
    relay, probe = await start_relay(Relay(hold_end_reply=hold))
    seed_list(store, tmp_path, 5)
    settings = make_settings(tmp_path, probe.port, concurrency=1)
    campaign_id = new_campaign(store)
    stop = asyncio.Event()
    run = asyncio.create_task(send(settings, store, campaign_id, stop_requested=stop))

    await asyncio.wait_for(second_envelope_behind_the_first_dot(relay), 30)
    stop.set()  # the engine's watcher of this event runs before the relay's reply is read
    hold.set()
    result = await asyncio.wait_for(run, 60)

    assert result.reason is StopReason.INTERRUPTED
    assert len(relay.messages) == 1
    rows = sorted((row.status, row.attempts) for row in store.iter_report(campaign_id))
    assert rows == [(DeliveryStatus.QUEUED, 0)] * 4 + [(DeliveryStatus.SENT, 1)]


async def test_a_message_waiting_when_the_stop_came_counts_no_attempt_whatever_fails(
    store: Store, start_relay: Start, tmp_path: Path
) -> None:
    """The same, but the relay answers the first dot with a 421 and is busy for any new
    session (a 421 greeting): the second message, waiting when the stop came, goes to a
    new session that fails before its body. That failure came after the stop and says
    nothing about the recipient: no attempt is counted, the row is queued as it was."""
    hold = asyncio.Event()
    relay, probe = await start_relay(
        Relay(
            hold_end_reply=hold,
            end_replies=[b"421 4.3.2 closing\r\n"],
            later_greeting=b"421 4.3.2 busy, try later\r\n",
        )
    )
    seed_list(store, tmp_path, 5)
    settings = make_settings(tmp_path, probe.port, concurrency=1)
    campaign_id = new_campaign(store)
    stop = asyncio.Event()
    run = asyncio.create_task(send(settings, store, campaign_id, stop_requested=stop))

    await asyncio.wait_for(second_envelope_behind_the_first_dot(relay), 30)
    stop.set()
    hold.set()
    result = await asyncio.wait_for(run, 60)

    assert result.reason is StopReason.INTERRUPTED
    assert relay.messages == []
    # Whichever of the two workers took the session first: that message got the 421.
    rows = sorted((row.status, row.attempts) for row in store.iter_report(campaign_id))
    assert rows == [(DeliveryStatus.DEFERRED, 1)] + [(DeliveryStatus.QUEUED, 0)] * 4


async def test_a_message_held_back_at_a_stop_gives_its_slot_back_to_the_daily_cap(
    store: Store, tmp_path: Path
) -> None:
    """One connection, a relay that takes 0.3 s over each message, MAILER_DAILY_LIMIT set
    (the shared budget counts every slot): a pause comes while the next message, its rate
    slot taken, waits for the connection. It is held back, and its slot goes back to the
    daily cap, which counts only the messages that went (it cost the day's cap one a
    stop)."""
    seed_list(store, tmp_path, 20)
    with SmtpTestServer() as server:
        server.delays["END"] = 0.3
        settings = make_settings(tmp_path, server.port, concurrency=1, daily_limit=1000)
        campaign_id = new_campaign(store)
        run = asyncio.create_task(send(settings, store, campaign_id))
        while len(server.messages) < 2:  # noqa: ASYNC110 - the recording is a plain list
            await asyncio.sleep(0.02)
        assert store.set_campaign_status(
            campaign_id, CampaignStatus.PAUSED, only_from=[CampaignStatus.SENDING]
        )
        result = await asyncio.wait_for(run, 60)
        went = len(server.messages)
    assert result.reason is StopReason.HALTED
    counts = store.delivery_counts(campaign_id)
    assert counts.sent == went < 20
    assert counted(store, GLOBAL_BUDGET) == went
