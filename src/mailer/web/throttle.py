"""A per-client budget for POSTs with an invalid link: a client spraying made-up tokens
gets 429 once its budget is spent, while a POST with a valid token is never refused.

Why only invalid links are counted: a person's one-click POST must work every time (a
refused one may never be retried, and the law wants it honoured), and mailbox providers
send their users' one-click POSTs from a handful of shared addresses, so counting valid
POSTs per address would let anyone flooding from (or spoofing) such an address block real
unsubscribes. A valid token cannot be made up (128-bit tag), so only its holder can
repeat it, and its work is capped by the pages' database concurrency limit.

Buckets live in process memory (one `mailer serve` process per site); the least recently
seen clients are forgotten beyond `max_clients`, so memory stays bounded under a spray of
addresses. The client is the TCP peer; uvicorn replaces it with the X-Forwarded-For
address only for connections from `mailer serve --forwarded-allow-ips` (default: none),
so a client cannot pick its own bucket by sending that header.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class ClientRateLimiter:
    """`burst` requests at once per client, refilled at `per_minute`."""

    def __init__(
        self,
        *,
        per_minute: float,
        burst: int,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("per_minute must be positive and burst at least 1")
        self.per_second = per_minute / 60.0
        self.burst = float(burst)
        self.max_clients = max_clients
        self.clock = clock
        # client -> (tokens left, when counted); insertion order is recency of use.
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, client: str) -> float:
        """Spend one token: 0.0 if allowed, else the seconds until one is available."""
        now = self.clock()
        tokens, then = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.per_second)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[client] = (tokens, now)
            wait = (1.0 - tokens) / self.per_second
        while len(self._buckets) > self.max_clients:
            del self._buckets[next(iter(self._buckets))]
        return wait
