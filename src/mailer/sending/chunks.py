"""How many claimed rows to mark `sending` at once: what goes out within a short time.

Rows are re-checked (still subscribed, not suppressed) and marked `sending` just before
they go, so that an unsubscribe made moments before is honoured and a crash leaves few
rows `sending`. Each marking is a statement with its commit, though: marking a fixed
`concurrency` rows a time cost a sender on PostgreSQL most of its database time (bench/
README.md, bench_processes). So the chunk follows the rate the workers take rows at: as
many as they take in `window` seconds, never fewer than `least` (one per connection, as
before) nor more than `most`. A rate-limited sender marks no more ahead than before; a
fast one marks more rows per statement, which still go out within about the same time.

The rate is measured over `period` seconds at least: workers that were idle take a queue's
worth of rows at once when a chunk arrives, which over a few milliseconds would look like
thousands a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class ChunkSizer:
    """Counts the rows workers take; sizes the next chunk from the rate since the last."""

    def __init__(
        self,
        *,
        least: int,
        most: int,
        window: float,
        period: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if least < 1 or most < least or window < 0 or period <= 0:
            raise ValueError(
                f"chunk bounds: least {least}, most {most}, window {window}, period {period}"
            )
        self.least = least
        self.most = most
        self.window = window
        self.period = period
        self._clock = clock
        self._since = clock()
        self._taken = 0
        self._size = least

    def taken(self) -> None:
        """A worker took one row off the queue (it is about to go)."""
        self._taken += 1

    def next_size(self) -> int:
        """The size of the chunk to mark now: the rows taken per second, measured since the
        last measure at least `period` ago, times the window, within the bounds. Until a
        period has passed (the start, too) the last size holds; a pause counts as time."""
        now = self._clock()
        elapsed = now - self._since
        if elapsed >= self.period:
            rate = self._taken / elapsed
            self._size = max(self.least, min(self.most, int(rate * self.window)))
            self._since, self._taken = now, 0
        return self._size
