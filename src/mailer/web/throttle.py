"""A per-client token bucket on POST: a flood from one address cannot monopolise the
database, while a person clicking twice, or a mailbox provider relaying its users'
one-click POSTs from a few addresses, stays well under the limit.

Buckets live in process memory (one `mailer serve` process per site); the least recently
seen clients are forgotten beyond `max_clients`, so memory stays bounded under a spray of
addresses. Behind a reverse proxy, the client address is what uvicorn derives from
X-Forwarded-For for trusted proxies (`--forwarded-allow-ips`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from mailer.web.rendering import PageRenderer


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


class RateLimitMiddleware:
    """429 with Retry-After for a client over its POST budget; other methods pass."""

    def __init__(self, app: ASGIApp, *, limiter: ClientRateLimiter, pages: PageRenderer) -> None:
        self.app = app
        self.limiter = limiter
        self.pages = pages

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            client = scope.get("client")
            wait = self.limiter.take(client[0] if client else "unknown")
            if wait > 0:
                response = self.pages.message(
                    status_code=429,
                    title="Too many requests",
                    text="Please wait a moment and try again.",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
