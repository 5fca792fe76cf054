"""The recipient pages' way to the store, which is synchronous: its calls run in worker
threads, at most `limit` at once.

The unsubscribe and RSVP pages share one limit of 4, below SQLAlchemy's pool (5
connections): with a limit per page class a burst on both had 8 threads sharing 5
connections, the rest waiting for one or opening overflow connections per request. The
calendar feed has its own 2 (its link is in every message of a campaign: a burst of
fetches must not queue unsubscribes).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import anyio
import anyio.to_thread

P = ParamSpec("P")
T = TypeVar("T")


class StoreThreads:
    def __init__(self, limit: int = 4) -> None:
        self._limiter = anyio.CapacityLimiter(limit)

    async def run(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await anyio.to_thread.run_sync(
            functools.partial(call, *args, **kwargs), limiter=self._limiter
        )
