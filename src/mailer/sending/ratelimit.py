"""The global send rate: a token bucket with optional hourly and daily caps.

The bucket is implemented as GCRA (the "virtual scheduling" form of a token bucket): each
grant is booked at a theoretical time, so a caller that wakes late does not push every
later grant back. Over any window of W seconds at most `burst + W * per_second` grants
are made, and a long run converges on exactly `per_second` whatever the sleep jitter.

Hourly and daily caps are *sliding* windows (any 3600 s / 86400 s span, not clock hours),
measured on the same monotonic clock: they cannot be gamed by a burst either side of
midnight, and they need no time zone. They only live as long as the process; a restarted
engine calls `preload()` with the ages of messages it already sent (from the ledger).

Waiters take turns in the order they called `acquire()` and book a grant when it is
granted. A wake-up slightly late keeps the virtual schedule; one more than an interval late
(the process was stalled) books the grant at its real time, so a stall is never followed by
a burst of the grants it delayed. A cancelled waiter books nothing.
"""

from __future__ import annotations

import asyncio
import enum
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

JITTER = 0.02  # seconds of lateness that are ordinary timer jitter, not a stall
HOUR = 3600.0
DAY = 86400.0


class Limit(enum.StrEnum):
    """Which limit a caller is waiting for."""

    RATE = "rate"
    HOURLY = "hourly"
    DAILY = "daily"


@dataclass(frozen=True, slots=True)
class Wait:
    """How long until the next grant, and which limit imposes it (None: no wait)."""

    seconds: float
    limit: Limit | None


class RateLimiter:
    """Token bucket of `burst` tokens refilled at `per_second`, plus sliding hour/day caps."""

    def __init__(
        self,
        *,
        per_second: float,
        burst: int | None = None,
        per_hour: int | None = None,
        per_day: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if not per_second > 0 or math.isinf(per_second):
            raise ValueError("per_second must be a positive finite number")
        # Default burst 1: messages leave evenly spaced, which relays and their
        # reputation systems like best; a larger burst only helps after idle time.
        burst = 1 if burst is None else burst
        if burst < 1:
            raise ValueError("burst must be at least 1")
        for name, cap in (("per_hour", per_hour), ("per_day", per_day)):
            if cap is not None and cap < 1:
                raise ValueError(f"{name} must be at least 1")
        self.per_second = per_second
        self.burst = burst
        self.per_hour = per_hour
        self.per_day = per_day
        self._clock = clock
        self._sleep = sleep
        self._interval = 1.0 / per_second
        self._tolerance = (burst - 1) * self._interval
        self._tat = -math.inf  # theoretical arrival time of the next conforming grant
        self._turn = asyncio.Lock()
        # Lateness up to this is ordinary timer jitter (about a millisecond here), made up
        # on the schedule; beyond it the process was stalled and the debt is dropped.
        self._stall = max(self._interval, JITTER)
        # Only the last `cap` grant times matter: the next grant must come a window
        # after the oldest of them. maxlen drops older ones for free.
        self._hour: deque[float] | None = deque(maxlen=per_hour) if per_hour else None
        self._day: deque[float] | None = deque(maxlen=per_day) if per_day else None

    # -- public API -------------------------------------------------------------------

    async def acquire(self) -> None:
        """Wait until one more message may be sent, and book it.

        Waiters take turns (FIFO): each books its grant when it is granted. A wake-up a
        little late keeps the theoretical schedule, so the long-run rate stays exact; one
        later than a whole interval means the process was stalled, and the grant is booked
        when it really happened, so the waiters behind it do not all leave at once. (At
        rates above 50/s "a whole interval" is at least 20 ms: timer jitter alone exceeds
        a 1 ms interval.)
        """
        async with self._turn:
            now = self._clock()
            at, _ = self._earliest(now)
            if at > now:
                await self._sleep(at - now)
            granted = self._clock()
            self._book(at if granted - at <= self._stall else granted)

    async def take(self) -> None:
        """acquire(), with SharedRateLimiter's face: this process's own limiter keeps no
        slot to hand back (see give_back)."""
        await self.acquire()

    def give_back(self, slot: object) -> None:
        """Nothing to return: a grant here is gone with the process; only a shared budget
        (SharedRateLimiter) counts slots for caps that outlive it."""

    def ready(self) -> bool:
        """True if an `acquire()` made now would be granted without waiting."""
        return not self._turn.locked() and self._earliest(self._clock())[0] <= self._clock()

    def try_acquire(self) -> bool:
        """Book one message if it may be sent right now; never waits."""
        now = self._clock()
        at, _ = self._earliest(now)
        if at > now:
            return False
        self._book(at)
        return True

    def next_wait(self) -> Wait:
        """How long an `acquire()` made now would wait, and why; books nothing.

        The engine uses it to report "daily cap reached, resuming at ..." (add
        `seconds` to the wall clock) instead of sleeping silently for hours.
        """
        now = self._clock()
        at, limit = self._earliest(now)
        return Wait(at - now, limit) if at > now else Wait(0.0, None)

    def preload(self, ages: Iterable[float]) -> None:
        """Count messages sent `ages` seconds ago (e.g. read from the ledger after a restart)
        against the hourly and daily caps. Call before the first `acquire()`."""
        now = self._clock()
        for moment in sorted(now - age for age in ages if age >= 0):
            if self._hour is not None and moment > now - HOUR:
                self._hour.append(moment)
            if self._day is not None and moment > now - DAY:
                self._day.append(moment)

    # -- internals --------------------------------------------------------------------

    def _earliest(self, now: float) -> tuple[float, Limit]:
        at, limit = max(now, self._tat - self._tolerance), Limit.RATE
        for window, span, which in (
            (self._hour, HOUR, Limit.HOURLY),
            (self._day, DAY, Limit.DAILY),
        ):
            if window is not None and len(window) == window.maxlen:
                free_at = window[0] + span
                if free_at > at:
                    at, limit = free_at, which
        return at, limit

    def _book(self, at: float) -> None:
        self._tat = max(self._tat, at) + self._interval
        if self._hour is not None:
            self._hour.append(at)
        if self._day is not None:
            self._day.append(at)
