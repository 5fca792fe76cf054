"""Each relay's rate and daily cap hold for every sender sharing the store (issue 15).

Two senders are two RelayPools over one store, as two processes or machines would have:
each relay's limiter books its slots from the relay's budget in the store (`relay:NAME`).
The pools send through in-memory relays on a virtual clock (no wall-clock race), or, for
what the ledger already holds, through real aiosmtpd relays with the real engine. Real
SQLite files and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from campaign_support import new_campaign, seed_list, send
from mailer.config import RelaySettings
from mailer.delivery.memory import MemoryTransport
from mailer.errors import TransportError
from mailer.models import DeliveryStatus, Outcome, OutgoingMessage
from mailer.sending.engine import StopReason
from mailer.sending.policy import CircuitBreaker
from mailer.sending.ratelimit import RateLimiter
from mailer.sending.relays import RelayPool, RelayState, relay_budget, relay_limiter
from mailer.sending.shared_rate import SharedRateLimiter
from mailer.store import Store
from smtp_server import SmtpTestServer
from test_relays import ledger_relays, relay, relay_settings
from test_shared_rate import counted
from virtual_time import VirtualTime, busiest_second, inline

START = 1_900_000_000.0  # epoch seconds: the budgets' clock, here virtual
DAY = 86400.0


def _message(sender: int, i: int) -> OutgoingMessage:
    return OutgoingMessage(
        "from@example.org", f"s{sender}-p{i}@example.org", f"<{sender}.{i}@x>", b"x\r\n"
    )


def _pool(
    store: Store | None,
    relays: list[tuple[RelaySettings, MemoryTransport]],
    *,
    clock: Any,
    sleep: Any,
) -> RelayPool:
    """One sender's pool: each relay's limiter from relay_limiter, as relay_pool builds
    it, on the injected clock."""
    states = [
        RelayState(
            name=settings.name,
            weight=settings.weight,
            transport=transport,
            limiter=relay_limiter(settings, store, clock=clock, sleep=sleep, offload=inline),
            breaker=CircuitBreaker(window=50, threshold=0.8),
        )
        for settings, transport in relays
    ]
    return RelayPool(states)


def _relay(name: str, **values: Any) -> RelaySettings:
    return RelaySettings(host="127.0.0.1", port=25, name=name, **values)


async def test_two_senders_share_one_relays_rate(store: Store) -> None:
    """Relay "a" at 50 messages a second, two senders of three tasks each sending to it
    as fast as they are let for 20 virtual seconds: together 50/s within 5%, no second
    above 50 + 1 (the bucket), and both senders had a share. (With a limiter per process
    they would send 100/s.)"""
    time = VirtualTime(START)
    end = START + 20
    sent_at: list[float] = []
    per_sender = [0, 0]

    def relay_a(message: OutgoingMessage) -> Outcome:
        sent_at.append(time.now - START)
        return Outcome(DeliveryStatus.SENT, 250, "ok")

    a = _relay("a", rate_limit=50)
    pools = [
        _pool(store, [(a, MemoryTransport(relay_a))], clock=time.clock, sleep=time.sleep)
        for _ in range(2)
    ]
    assert all(isinstance(p.relays[0].limiter, SharedRateLimiter) for p in pools)

    async def task(sender: int) -> None:
        i = 0
        while time.now < end:
            await pools[sender].send(_message(sender, i))
            per_sender[sender] += 1
            i += 1

    tasks = [asyncio.create_task(task(sender)) for sender in (0, 1) for _ in range(3)]
    await time.drive(tasks)
    in_time = [t for t in sent_at if t < 20]
    assert abs(len(in_time) / 20 - 50) <= 50 * 0.05, len(in_time)
    assert busiest_second(in_time) <= 50 + 1
    assert min(per_sender) >= len(sent_at) // 4, per_sender


async def test_a_relays_daily_cap_holds_across_two_senders_and_a_restart(store: Store) -> None:
    """Relay "a" may take 30 a day, "b" has no cap. Two senders alternate 40 messages
    each: "a" takes 30 in all, "b" the other 50, and each sender then leaves "a" out
    (capped). A sender started afresh (a restart) finds "a" still capped: the store's
    counts are the record. A day later "a" takes its share again."""
    now = [START]

    async def sleep(seconds: float) -> None:
        now[0] += max(seconds, 0.0)

    a, b = _relay("a", daily_limit=30), _relay("b")
    to_a, to_b = MemoryTransport(), MemoryTransport()

    def sender() -> RelayPool:
        return _pool(store, [(a, to_a), (b, to_b)], clock=lambda: now[0], sleep=sleep)

    first, second = sender(), sender()
    for i in range(40):
        for number, pool in enumerate((first, second)):
            await pool.send(_message(number, i))
    assert len(to_a.messages) == 30
    assert len(to_b.messages) == 50
    assert first.relays[0].capped()
    assert second.relays[0].capped()
    await first.aclose()
    await second.aclose()

    to_a.closed = to_b.closed = False  # the relays stay up; only the senders restart
    restarted = sender()
    picked = [(await restarted.send(_message(3, i))).relay for i in range(10)]
    assert picked == ["b"] * 10
    assert restarted.relays[0].capped()

    now[0] += DAY
    picked = [(await restarted.send(_message(3, i))).relay for i in range(10, 20)]
    assert 4 <= picked.count("a") <= 6, picked
    assert len(to_a.messages) == 30 + picked.count("a")


def test_without_a_store_a_relays_limits_are_this_process_alone() -> None:
    """Callers without a store get a limiter of their own; a relay without rate or cap
    gets none."""
    local = relay_limiter(_relay("a", rate_limit=5, daily_limit=100), None)
    assert isinstance(local, RateLimiter)
    assert (local.per_second, local.per_day) == (5, 100)
    assert relay_limiter(_relay("a"), None) is None


async def test_a_relays_cap_counts_what_the_ledger_says_it_took(
    store: Store, tmp_path: Path
) -> None:
    """Through the real engine and real relays: a campaign goes out through relays "a"
    and "b" with no caps. Then "a" gets a daily cap of what it took plus 5: the next
    campaign gives "a" exactly 5 (its budget, new, counts the ledger's messages of the
    last day, once), and the one after gives it none (the budget's counts survive the
    sender's end); every recipient is delivered each time."""
    addresses = seed_list(store, tmp_path, 40)
    async with SmtpTestServer() as relay_a, SmtpTestServer() as relay_b:

        async def campaign(**a_limits: Any) -> dict[str, int]:
            settings = relay_settings(
                tmp_path,
                [relay("relay-a", relay_a.port, **a_limits), relay("relay-b", relay_b.port)],
            )
            campaign_id = new_campaign(store)
            result = await send(settings, store, campaign_id)
            assert result.reason is StopReason.FINISHED, result.message
            rows = ledger_relays(store, campaign_id)
            assert sorted(rows) == sorted(addresses)
            assert {status for status, _ in rows.values()} == {DeliveryStatus.SENT.value}
            taken = {"relay-a": 0, "relay-b": 0}
            for _, name in rows.values():
                assert name is not None
                taken[name] += 1
            return taken

        before = await campaign()
        assert before["relay-a"] >= 10, before  # weights 1:1
        cap = before["relay-a"] + 5
        assert await campaign(daily_limit=cap) == {"relay-a": 5, "relay-b": 35}
        assert await campaign(daily_limit=cap) == {"relay-a": 0, "relay-b": 40}
    assert len(relay_a.recipients) == cap
    assert len(relay_b.recipients) == 3 * 40 - cap


class _Stopped(Exception):
    """What the engine's body callback raises when the run stopped meanwhile."""


async def test_a_relays_slot_for_a_message_that_never_reached_it_goes_back_to_its_cap(
    store: Store,
) -> None:
    """Relay "a" (daily cap 100, picked first by weight) takes a slot for each message
    before sending it. A message held back as the body was about to go (the run had
    stopped), and one "a" refused before any body (it went to "b" instead), never reached
    "a": their slots go back to its cap, which counts only the message it took. (A
    trial's relay capped at 200 took 197: three stops had each kept a held-back slot.)"""
    now = [START]

    async def sleep(seconds: float) -> None:
        now[0] += max(seconds, 0.0)

    a, b = _relay("a", daily_limit=100, weight=1000), _relay("b", daily_limit=100)
    refusing = "refused@example.org"
    to_a = MemoryTransport({refusing: TransportError("421 closing: too busy")})
    to_b = MemoryTransport()
    pool = _pool(store, [(a, to_a), (b, to_b)], clock=lambda: now[0], sleep=sleep)

    def stopped() -> None:
        raise _Stopped

    taken = await pool.send(_message(0, 0))
    with pytest.raises(_Stopped):
        await pool.send(_message(0, 1), on_body=stopped)
    moved = await pool.send(OutgoingMessage("from@example.org", refusing, "<0.2@x>", b"x\r\n"))
    assert (taken.relay, moved.relay) == ("a", "b")
    assert [m.message_id for m in to_a.messages] == ["<0.0@x>"]
    await pool.aclose()
    assert counted(store, relay_budget("a")) == 1
    assert counted(store, relay_budget("b")) == 1
