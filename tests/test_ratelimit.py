"""The global rate limiter: exact long-run rate, no burst above the bucket, hour/day caps."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.sending.ratelimit import DAY, HOUR, Limit, RateLimiter, Wait


class FakeClock:
    """Virtual time: `sleep` advances it (plus optional oversleep, like a busy loop)."""

    def __init__(self, oversleep: float = 0.0, seed: int = 1) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self._oversleep = oversleep
        self._random = random.Random(seed)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds + self._random.uniform(0, self._oversleep)


def assert_wait(wait: Wait, seconds: float, limit: Limit) -> None:
    """`wait` is imposed by `limit` and lasts `seconds` (tolerantly: float sums are not exact)."""
    assert wait.limit is limit
    assert wait.seconds == pytest.approx(seconds)


def limiter(
    clock: FakeClock,
    *,
    per_second: float,
    burst: int | None = None,
    per_hour: int | None = None,
    per_day: int | None = None,
) -> RateLimiter:
    return RateLimiter(
        per_second=per_second,
        burst=burst,
        per_hour=per_hour,
        per_day=per_day,
        clock=clock,
        sleep=clock.sleep,
    )


async def test_sequential_acquires_are_spaced_exactly() -> None:
    """At 10/s with no burst, 101 grants take exactly 10 s of virtual time."""
    clock = FakeClock()
    bucket = limiter(clock, per_second=10)
    for _ in range(101):
        await bucket.acquire()
    assert clock.now == pytest.approx(10.0, abs=1e-9)


async def test_a_stalled_process_does_not_catch_up_in_a_burst() -> None:
    """20 tasks at 100/s; the event loop stalls for 0.5 s once. Afterwards grants stay at
    least one interval apart: the 50 missed grants are not sent all at once."""
    clock = FakeClock()
    stalled = False

    async def sleep(seconds: float) -> None:
        nonlocal stalled
        await clock.sleep(seconds)
        if not stalled and clock.now > 1.0:
            stalled = True
            clock.now += 0.5
        await asyncio.sleep(0)  # let the other tasks run, as a real sleep would

    bucket = RateLimiter(per_second=100, clock=clock, sleep=sleep)
    grants: list[float] = []

    async def worker() -> None:
        while len(grants) < 300:
            await bucket.acquire()
            grants.append(clock.now)

    await asyncio.gather(*(worker() for _ in range(20)))
    assert stalled
    gaps = [later - earlier for earlier, later in itertools.pairwise(grants)]
    assert min(gaps) >= 0.01 - 1e-9


async def test_late_wakeups_do_not_slow_the_long_run_rate() -> None:
    """Each sleep overshoots by up to 5 ms, yet over 60 s the rate stays within 1%:
    grants are booked on a virtual schedule, so lateness is not carried forward."""
    clock = FakeClock(oversleep=0.005)
    bucket = limiter(clock, per_second=50)
    granted = 0
    while clock.now < 60.0:
        await bucket.acquire()
        granted += 1
    assert granted / clock.now == pytest.approx(50, rel=0.01)


async def test_concurrent_callers_are_booked_in_order_one_interval_apart() -> None:
    """Twenty tasks asking at the same instant wait 0, 0.1, 0.2, ... s: first come, first served."""
    clock = FakeClock()
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    bucket = RateLimiter(per_second=10, clock=clock, sleep=record)
    await asyncio.gather(*(bucket.acquire() for _ in range(20)))
    assert waits == pytest.approx([i / 10 for i in range(1, 20)])  # the first did not sleep


def test_after_idle_time_the_burst_is_capped_at_the_bucket_size() -> None:
    """Idle for an hour, a bucket of 5 grants exactly 5 at once, then one per interval."""
    clock = FakeClock()
    bucket = limiter(clock, per_second=10, burst=5)
    clock.now = 3600.0
    assert [bucket.try_acquire() for _ in range(6)] == [True] * 5 + [False]
    assert_wait(bucket.next_wait(), 0.1, Limit.RATE)
    clock.now += 0.1
    assert bucket.try_acquire()
    assert not bucket.try_acquire()


@given(
    gaps=st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=200),
    burst=st.integers(min_value=1, max_value=10),
    per_second=st.floats(min_value=0.5, max_value=100),
)
def test_no_window_ever_holds_more_than_burst_plus_rate_times_length(
    gaps: list[float], burst: int, per_second: float
) -> None:
    """Whatever the call pattern, any span [a, b] holds at most burst + (b - a) * rate grants."""
    clock = FakeClock()
    bucket = limiter(clock, per_second=per_second, burst=burst)
    grants = []
    for gap in gaps:
        clock.now += gap
        if bucket.try_acquire():
            grants.append(clock.now)
    for i, first in enumerate(grants):
        for j in range(i, len(grants)):
            assert j - i + 1 <= burst + (grants[j] - first) * per_second + 1e-6


def test_the_hourly_cap_is_a_sliding_window() -> None:
    """10 per hour: one grant at t=0 and nine at t=100 fill the hour; next_wait names the
    hourly cap; at t=3600 exactly one slot opens (the t=0 grant left), the rest at t=3700."""
    clock = FakeClock()
    bucket = limiter(clock, per_second=100, burst=10, per_hour=10)
    assert bucket.try_acquire()
    clock.now = 100.0
    assert [bucket.try_acquire() for _ in range(10)] == [True] * 9 + [False]
    assert_wait(bucket.next_wait(), 3500.0, Limit.HOURLY)
    clock.now = HOUR
    assert [bucket.try_acquire() for _ in range(2)] == [True, False]
    assert_wait(bucket.next_wait(), 100.0, Limit.HOURLY)


async def test_acquire_sleeps_through_the_hourly_cap() -> None:
    """acquire() itself waits the cap out: the 11th grant at 100/s, 10/hour comes at 3600 s."""
    clock = FakeClock()
    bucket = limiter(clock, per_second=100, per_hour=10)
    for _ in range(11):
        await bucket.acquire()
    assert clock.now == pytest.approx(HOUR)


async def test_the_daily_cap_applies_across_hours() -> None:
    """5 per hour and 8 per day: 5 in the first hour, 3 in the second, then wait for the day."""
    clock = FakeClock()
    bucket = limiter(clock, per_second=1, per_hour=5, per_day=8)
    for _ in range(8):
        await bucket.acquire()
    assert clock.now == pytest.approx(HOUR + 2)  # grants at 0..4 s, then 3600..3602 s
    wait = bucket.next_wait()
    assert wait.limit is Limit.DAILY
    assert wait.seconds == pytest.approx(DAY - clock.now)


def test_preload_counts_messages_sent_before_a_restart() -> None:
    """Ages from the ledger fill the hourly window: two sent 10 s and 20 s ago with a cap of 2
    means waiting until the older is an hour old; one sent 2 hours ago does not count."""
    clock = FakeClock()
    clock.now = 10_000.0
    bucket = limiter(clock, per_second=1, per_hour=2)
    bucket.preload([10.0, 20.0, 7200.0])
    assert_wait(bucket.next_wait(), HOUR - 20, Limit.HOURLY)


def test_no_wait_is_reported_when_a_grant_is_free() -> None:
    """next_wait() books nothing and says (0, None) when acquire would not sleep."""
    bucket = limiter(FakeClock(), per_second=1, per_day=3)
    assert bucket.next_wait() == Wait(0.0, None)
    assert bucket.next_wait() == Wait(0.0, None)


@pytest.mark.parametrize(("per_second", "burst"), [(0.0, None), (float("inf"), None), (1.0, 0)])
def test_nonsense_settings_are_refused(per_second: float, burst: int | None) -> None:
    """A zero or infinite rate or an empty bucket is a programming error."""
    with pytest.raises(ValueError, match="must be"):
        RateLimiter(per_second=per_second, burst=burst)
