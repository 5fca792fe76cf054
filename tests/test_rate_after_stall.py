"""After a relay stalls, the slots a sender booked ahead are not all used at once,
counted where it matters: when each body reaches the relay.

A sender books about `lookahead` seconds of slots from the shared budget at a time. When
the relay stops answering, nobody takes them and their time passes; before, the workers
took them the moment it answered again, one after the other with no wait, on top of the
rate. Now slots whose time passed while nobody took any are dropped (and the caps get
them back) and fresh ones are booked.

What is left, and bounded here: the engine runs as many workers again as connections
(EngineOptions.ahead), each with its slot taken and its message built, waiting for a
session; when the relay answers again those go together. So the busiest second after a
stall holds at most the rate, the bucket and one message a connection (bench/README.md,
ninth session). Holding it to the rate and the bucket alone would need the slot taken
when the session is, which the pipelined hand-off (the next envelope behind the dot)
does not allow today.

The limiter runs on a clock its own sleeps advance: 300 messages at 20/s are 15 seconds
of that clock and about a second of real time, whatever the machine's load; the stall
is 5 seconds added to that clock while every worker is held.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from campaign_support import make_settings, new_campaign, seed_list
from mailer.models import DeliveryStatus, Outcome, OutgoingMessage
from mailer.sending.engine import StopReason
from mailer.sending.run import run_campaign
from mailer.sending.shared_rate import SharedRateLimiter
from mailer.store import Store
from mailer.store.signer import load_signer
from virtual_time import busiest_second, inline

RATE = 20.0
SESSIONS = 4
RECIPIENTS = 300
STALL = 5.0


class LimiterClock:
    """Virtual time moved on only by the rate limiter's sleeps (one at a time: the limiter
    lets one waiter sleep at once) and by the test's stall. A sleep first lets every task
    that can run go as far as it can at the present time (a build, a send up to its
    body: no thread, no real wait), as it would while a real clock stood still."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        for _ in range(20):
            await asyncio.sleep(0)
        self.now += max(seconds, 0.0)


class StallingRelay:
    """At most `SESSIONS` messages with the relay at once (the SMTP pool's bound); after
    `stall_after` bodies it answers nothing until `answer` is set. Records the clock's
    time of every body."""

    def __init__(self, clock: Callable[[], float], stall_after: int) -> None:
        self._clock = clock
        self._sessions = asyncio.Semaphore(SESSIONS)
        self._stall_after = stall_after
        self.answer = asyncio.Event()
        self.bodies: list[float] = []
        self.waiting = 0  # sends waiting for a session
        self.held = 0  # sends whose body went and whose reply is held back

    async def send(
        self, message: OutgoingMessage, *, on_body: Callable[[], None] | None = None
    ) -> Outcome:
        self.waiting += 1
        async with self._sessions:
            self.waiting -= 1
            if on_body is not None:
                on_body()
            self.bodies.append(self._clock())
            if len(self.bodies) >= self._stall_after and not self.answer.is_set():
                self.held += 1
                await self.answer.wait()
                self.held -= 1
        return Outcome(DeliveryStatus.SENT, 250, "2.0.0 Ok")

    async def aclose(self) -> None:
        pass


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll: the engine's workers reach the relay through threads (marking rows)."""
    async with asyncio.timeout(30):
        while not condition():  # noqa: ASYNC110 (nothing to wait on but the condition)
            await asyncio.sleep(0.01)


async def test_slots_booked_ahead_are_not_sent_at_once_after_a_stall(
    store: Store, tmp_path: Path
) -> None:
    """Half a second of slots a booking (10): before, 27 bodies in the busiest second
    after the stall; now at most rate + bucket + one a connection (25; 24 seen)."""
    seed_list(store, tmp_path, RECIPIENTS)
    settings = make_settings(tmp_path, 2525, concurrency=SESSIONS, rate_limit=RATE)
    campaign_id = new_campaign(store)
    clock = LimiterClock(1_900_000_000.0)
    limiter = SharedRateLimiter(
        store, per_second=RATE, lookahead=0.5, clock=clock, sleep=clock.sleep, offload=inline
    )
    relay = StallingRelay(clock, stall_after=100)
    sending = asyncio.create_task(
        run_campaign(
            settings=settings,
            store=store,
            transport=relay,
            signer=load_signer(settings),
            campaign_id=campaign_id,
            limiter=limiter,
        )
    )
    # Every worker held: SESSIONS with the relay, as many again waiting with their slot.
    await wait_until(lambda: relay.held == SESSIONS and relay.waiting == SESSIONS)
    clock.now += STALL
    relay.answer.set()
    result = await sending

    assert result.reason is StopReason.FINISHED
    assert len(relay.bodies) == RECIPIENTS
    assert busiest_second(relay.bodies) <= RATE + 1 + SESSIONS
    # ... and the stall cost no more than the messages it held: the run took the time
    # the rate asks for, plus the stall, plus a second's slack.
    assert relay.bodies[-1] - relay.bodies[0] <= RECIPIENTS / RATE + STALL + 1
