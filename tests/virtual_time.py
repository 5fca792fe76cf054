"""Virtual time for tests of the shared rate (issue 15): many tasks, a clock that jumps.

Senders booking slots from a budget in a real store run on this clock instead of the wall
clock: a minute of sending takes a few seconds of real time, and the result does not
depend on the machine's load. Store calls are made inline (`inline`), so a task only
yields in `sleep()`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any


class VirtualTime:
    """A clock and a sleep for many tasks: time jumps to the next wake-up once every task
    is waiting (store calls are made inline, so a task only yields in sleep())."""

    def __init__(self, start: float) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), next(self._order), future))
        await future

    async def drive(self, tasks: list[asyncio.Task[None]]) -> None:
        while not all(task.done() for task in tasks):
            # Let every runnable task reach its next sleep: the sleepers stop changing
            # (a lock passed on takes two turns of the loop to show).
            seen, calm = -1, 0
            while calm < 3:
                await asyncio.sleep(0)
                calm = calm + 1 if len(self._sleepers) == seen else 0
                seen = len(self._sleepers)
            if not self._sleepers:
                continue
            wake, _, future = heapq.heappop(self._sleepers)
            if future.done():  # its sleeper was cancelled (a stop)
                continue
            self.now = max(self.now, wake)
            future.set_result(None)
        for task in tasks:
            task.result()


def busiest_second(times: list[float]) -> int:
    """The most events in any window [t, t + 1 s)."""
    times = sorted(times)
    most, end = 0, 0
    for start, at in enumerate(times):
        while end < len(times) and times[end] < at + 1.0:
            end += 1
        most = max(most, end - start)
    return most


async def inline(call: Callable[[], Any]) -> Any:
    """A SharedRateLimiter `offload` that calls the store on the event loop (tests only)."""
    return call()
