"""One rate for every sender (issue 15): slots booked from a bucket in the database.

`RateLimiter` (mailer.sending.ratelimit) paces one process. `SharedRateLimiter` has the
same face for the engine, but its slots come from a budget every sender shares (a row in
the store, see mailer.store.rate_budget): each process books a few slots at a time, about
`lookahead` seconds' worth, and sends each at its own time. The slots of all senders
interleave on one schedule, so the sum over senders and machines is paced as one sender
would be: over any window of W seconds at most `burst + W * per_second` slots, and the
hourly and daily caps over all of them.

A process books its next slots before the last of its current ones are used (once half
of a booking is left), in the background: a sender whose store call waits (another
process holding SQLite's write lock, a slow round trip) keeps sending meanwhile, where it
stalled at every booking before. A process that stops hands its unused slots back; one
killed with slots booked wastes at most about one and a half `lookahead` seconds of its
share (the caps count them: they are never exceeded).

A budget that paces nothing (a rate of 100,000/s or more, the settings' way to say "no
rate") and has no hourly or daily cap has nothing to share: nobody books it, so sending
without a rate costs no store write every few hundred messages.

Slots are times, and a time can pass unused: when nobody took a slot for a while (the
relay stopped answering, the process stalled), the booked slots whose time has passed are
dropped (the caps get them back) rather than used all at once.

A booking takes a store round trip, and one made when the schedule was free starts at
the time it was asked for: it comes back with its first slots already due (a PostgreSQL
round trip of 25 ms at 200/s: five), and those went out at once, on top of the slots the
other senders were sending on time: 201-206 grants in a second where the setting and
bucket allow 201 (bench/README). So a booking asks to start no earlier than it will
arrive (the lower median of the last few round trips), a booking ahead is made at least
that long before the slots run out, and the slots of a booking that still comes back
more than half an interval late (beyond the bucket) are dropped (the caps get them back),
not sent together. Only a booking's arrival is checked: a slot a busy sender comes for late is
still used (dropping those cut the rate of a sender slower than the schedule).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import statistics
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mailer.sending.ports import RateBudget
from mailer.sending.ratelimit import JITTER, Limit, Wait

Offload = Callable[[Callable[[], Any]], Awaitable[Any]]

GLOBAL_BUDGET = "global"

# Seconds in which nobody took a slot that make a stall (the relay stopped answering, the
# process stalled): then the booked slots whose time passed are dropped. Shorter gaps are
# a relay slower than the rate, whose sender uses its slots late but uses them: dropping
# them there cost the shared schedule 40% (a review, 50/s, one relay at 8/s).
_STALL = 1.0

# Store round trips kept to guess the next one (see _lead).
_ROUND_TRIPS = 8

# Messages a second no sender or relay comes near (the settings' way to say "no rate", a
# relay given only a daily cap): such a budget paces nothing, so when its slots pass
# unused does not matter and is not watched.
_PACES_NOTHING = 100_000.0


class RateCapped(Exception):
    """The hourly or daily cap will not allow a slot within the caller's patience."""

    def __init__(self, wait: Wait) -> None:
        super().__init__(f"{wait.limit} cap: {wait.seconds:.0f} s")
        self.wait = wait


@dataclass(frozen=True, slots=True)
class Slot:
    at: float
    minute: int
    """The minute it was booked in (what the caps counted it under)."""


async def _in_thread(call: Callable[[], Any]) -> Any:
    return await asyncio.to_thread(call)


class SharedRateLimiter:
    """The engine's rate limiter, over a budget in the store shared by every sender."""

    def __init__(
        self,
        store: RateBudget,
        *,
        per_second: float,
        burst: int | None = None,
        per_hour: int | None = None,
        per_day: int | None = None,
        budget: str = GLOBAL_BUDGET,
        lookahead: float = 0.1,
        horizon: float | None = None,
        max_grant: int = 256,
        patience: float = math.inf,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        offload: Offload = _in_thread,
    ) -> None:
        """`clock`: epoch seconds, the same on every machine (NTP); tests pass a virtual
        one with its `sleep`. `patience`: a cap freeing up later than this raises
        RateCapped from acquire() instead of sleeping (the engine stops, CAPPED).
        `offload`: how a store call leaves the event loop (a thread by default).
        `lookahead`: seconds of slots booked at a time; `horizon`: how far ahead of now the
        schedule may be booked (default four bookings: several senders each hold their
        next slots without asking twice)."""
        if not per_second > 0 or math.isinf(per_second):
            raise ValueError("per_second must be a positive finite number")
        self.per_second = per_second
        self.burst = 1 if burst is None else burst
        if self.burst < 1:
            raise ValueError("burst must be at least 1")
        self.per_hour = per_hour
        self.per_day = per_day
        self.budget = budget
        self.patience = patience
        self._store = store
        self._clock = clock
        self._sleep = sleep
        self._offload = offload
        self._interval = 1.0 / per_second
        self._horizon = max(0.5, 4 * lookahead) if horizon is None else horizon
        # About `lookahead` seconds of slots per booking: few round trips at high rates,
        # one slot at a time at low ones.
        self._grant = max(1, min(max_grant, math.ceil(per_second * lookahead)))
        self._max_grant = max(1, max_grant)
        self._slots: deque[Slot] = deque()
        self._last_end = 0.0  # where the last booking ended (to hand unused slots back)
        self._last_first = 0.0  # and where it began: only its slots can go back to the schedule
        # The booking made in the background while slots are left (see _book_ahead).
        self._ahead: asyncio.Task[None] | None = None
        self._low_water = self._grant // 2 if self._grant >= 2 else -1
        # A booking ahead that got nothing is not asked again before the store's answer
        # says slots may be free: else every message below the low water asked (a review:
        # 8 senders at 1,000/s made 5,511 store calls in 10 s instead of 411).
        self._ahead_after = -math.inf
        self._capped: Wait | None = None
        self._capped_until = 0.0
        self._turn = asyncio.Lock()
        # When nobody took a slot for this long, the slots more than the timer's jitter
        # (as RateLimiter's) in the past have passed.
        self._stall = _STALL if per_second < _PACES_NOTHING else math.inf
        # A budget that paces nothing and has no cap to count has nothing to share: its
        # senders book nothing (a store write a booking, contended by every sender).
        self._books = per_second < _PACES_NOTHING or per_hour is not None or per_day is not None
        self._jitter = max(self._interval, JITTER)
        self._last_grant = -math.inf
        # Slots booked and never used, by the minute they were booked in (the caps counted
        # them there): handed back before the next booking, and by close().
        self._unused: Counter[int] = Counter()
        # How long the last bookings took to come back (see _ask).
        self._round_trips: deque[float] = deque(maxlen=_ROUND_TRIPS)

    # -- the engine's face (as RateLimiter) ---------------------------------------------

    async def acquire(self) -> None:
        """Wait for this process's next slot, booking more from the budget when needed."""
        await self.take()

    def give_back(self, slot: Slot | None) -> None:
        """A slot from take() that was not used after all (the message never reached the
        relay): the caps get it back with the next booking, or at close()."""
        if slot is not None:
            self._unused[slot.minute] += 1

    async def take(self) -> Slot | None:
        """acquire(), and the slot it waited for (None from a budget that books nothing),
        for give_back()."""
        if not self._books:
            return None
        async with self._turn:
            if self._clock() - self._last_grant > self._stall:
                self._drop_passed()  # nobody took one for a while: theirs went by
            while not self._slots:
                if self._ahead is not None:  # its slots, or what stopped it, before a new one
                    await self._settle_ahead()
                    continue
                await self._give_back_unused()  # before the caps are counted again
                await self._book()
            if self._ahead is not None and self._ahead.done():
                await self._settle_ahead()  # a store error it met surfaces now
            slot = self._slots.popleft()
            if (
                len(self._slots) <= self._book_ahead_at()
                and self._ahead is None
                and self._clock() >= self._ahead_after
            ):
                self._ahead = asyncio.create_task(self._book_ahead())
            wait = slot.at - self._clock()
            if wait > 0:
                try:
                    await self._sleep(wait)
                except asyncio.CancelledError:  # a stop: the slot is still ours, unused
                    self._slots.appendleft(slot)
                    raise
            self._last_grant = self._clock()
            return slot

    def ready(self) -> bool:
        if not self._books:
            return True
        now = self._clock()
        return (
            not self._turn.locked()
            and bool(self._slots)
            and self._slots[0].at <= now
            and now - self._last_grant <= self._stall  # else acquire() drops and books
        )

    def next_wait(self) -> Wait:
        """The cap last reported by the budget, if it still holds; else no known wait."""
        now = self._clock()
        if self._capped is not None and now < self._capped_until:
            return Wait(self._capped_until - now, self._capped.limit)
        if self._slots and self._slots[0].at > now:
            return Wait(self._slots[0].at - now, Limit.RATE)
        return Wait(0.0, None)

    async def close(self) -> None:
        """Hand back the slots booked and not used (the caps count them otherwise): the
        ones still ahead to the schedule too, if nobody booked after them."""
        if self._ahead is not None:
            # Its store call runs on (a thread): wait for its slots, to hand them back too.
            with contextlib.suppress(Exception):
                await self._settle_ahead()
        # Only the last booking's slots end where the schedule does; an earlier booking's
        # left over may have another sender's booked after it, so only the caps get those.
        latest = Counter(slot.minute for slot in self._slots if slot.at >= self._last_first)
        earlier = Counter(slot.minute for slot in self._slots if slot.at < self._last_first)
        self._slots.clear()
        await self._return(latest, tat_end=self._last_end)
        await self._return(earlier, tat_end=None)
        await self._give_back_unused()

    # -- internals ----------------------------------------------------------------------

    async def _give_back_unused(self) -> None:
        """The caps get back the slots that passed unused (the schedule keeps them: their
        time is gone). Without caps nothing counts them."""
        if self.per_hour is None and self.per_day is None:
            self._unused.clear()
        elif self._unused:
            await self._return(self._unused, tat_end=None)

    async def _return(self, counts: Counter[int], *, tat_end: float | None) -> None:
        """One store call a minute; each minute leaves `counts` before its call, so none
        is handed back twice, whatever fails or is cancelled (one lost is counted by the
        caps still: never exceeded)."""
        for minute in list(counts):
            count = counts.pop(minute, 0)  # another close() of a shared limiter took it
            if not count:
                continue
            await self._offload(
                functools.partial(
                    self._store.return_rate_slots,
                    self.budget,
                    minute=minute,
                    count=count,
                    tat_end=tat_end,
                    interval=self._interval,
                )
            )

    def _drop_passed(self) -> None:
        """Drop the booked slots whose time has passed (they are in time order)."""
        passed = self._clock() - self._jitter
        while self._slots and self._slots[0].at < passed:
            self._unused[self._slots.popleft().minute] += 1

    async def _settle_ahead(self) -> None:
        """Wait for the background booking. Shielded: a caller cancelled meanwhile (a
        stop) leaves it to finish, its slots kept for close() to hand back."""
        ahead = self._ahead
        if ahead is None:
            return
        try:
            await asyncio.shield(ahead)  # a store error surfaces here, as it would from _book
        finally:
            if ahead.done():
                self._ahead = None

    async def _book_ahead(self) -> None:
        """The next booking, made while this process still has slots. It only adds slots:
        none granted (the horizon booked by others, a cap) is left to _book, which waits
        or stops when the slots have run out."""
        await self._give_back_unused()  # before the caps count this booking
        now, booking = await self._ask()
        if not self._take(now, booking):
            self._ahead_after = max(booking[2], self._clock() + self._interval / 2)

    def _lead(self) -> float:
        """The store's usual round trip: the lower median of the last few (one slow call,
        such as a process's first, does not hold the next bookings back), at most the
        horizon."""
        if not self._round_trips:
            return 0.0
        return min(statistics.median_low(self._round_trips), self._horizon)

    def _book_ahead_at(self) -> int:
        """Slots left when the next booking is made ahead: half a booking, or as many as
        the store's round trip lasts, so that it arrives before they run out (else it
        starts after a gap, which a lone sender's rate lost: 140/s of 200 with 100 ms
        store calls, a review)."""
        if self._low_water < 0:
            return -1
        covered = math.ceil(self._lead() * self.per_second) + 1
        return min(self._grant_now(), max(self._low_water, covered))

    def _grant_now(self) -> int:
        """Slots a booking asks for: about `lookahead` seconds' worth, or twice the store's
        round trip's worth when that is longer, so that one booking in flight keeps up."""
        wanted = math.ceil(2 * self._lead() * self.per_second)
        return max(self._grant, min(self._max_grant, wanted))

    async def _ask(self) -> tuple[float, tuple[float, int, float, str | None]]:
        """A booking, and the time it was asked for: the time of asking plus the store's
        usual round trip, so that slots starting there have not passed when they arrive.
        A booking ahead is made that long before the slots run out (_book_ahead_at), so
        it still starts where the schedule ends."""
        asked = self._clock()
        now = asked + self._lead()
        booking = await self._offload(functools.partial(self._request, now))
        self._round_trips.append(self._clock() - asked)
        return now, booking

    def _request(self, now: float) -> tuple[float, int, float, str | None]:
        return self._store.take_rate_slots(
            self.budget,
            now=now,
            count=self._grant_now(),
            interval=self._interval,
            burst=self.burst,
            horizon=self._horizon,
            per_hour=self.per_hour,
            per_day=self.per_day,
        )

    def _take(self, now: float, booking: tuple[float, int, float, str | None]) -> bool:
        """Add a booking's slots, less those that had passed by more than half an interval
        (beyond the bucket) when it arrived (the caps get them back); False if it granted
        none."""
        first, granted, _, cap = booking
        if not granted:
            return False
        minute = int(now // 60)
        slots = [Slot(first + i * self._interval, minute) for i in range(granted)]
        if self._stall < math.inf:  # a budget that paces: when a slot is used matters
            # Passed by more than half an interval (beyond the bucket): the one kept goes
            # at least half an interval before the next, never two at once.
            gone = self._clock() - (self.burst - 0.5) * self._interval
            passed = next((i for i, slot in enumerate(slots) if slot.at >= gone), granted)
            if passed:
                self._unused[minute] += passed
                del slots[:passed]
        self._slots.extend(slots)
        self._last_first = first
        self._last_end = first + granted * self._interval
        if cap is None:
            self._capped = None
        return True

    async def _book(self) -> None:
        now, booking = await self._ask()
        if self._take(now, booking):
            return
        _, _, free_at, cap = booking
        now = self._clock()
        if cap is not None:
            limit = Limit.HOURLY if cap == "hourly" else Limit.DAILY
            self._capped = Wait(free_at - now, limit)
            self._capped_until = free_at
            if free_at - now > self.patience:
                raise RateCapped(self._capped)
        # Booked ahead by others (or capped for a while): ask again when it frees up.
        await self._sleep(max(free_at - now, self._interval / 2, 0.001))
