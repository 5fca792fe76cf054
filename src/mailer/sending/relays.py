"""Several relays (MAILER_RELAYS, issue 15): one Transport that spreads messages by weight.

Each relay keeps its own SMTP pool (its concurrency), its own rate and daily cap, and its
own breaker. The rate and the daily cap are a budget in the store shared by every sender
(`relay:NAME`, as MAILER_RATE_LIMIT is the `global` one: see sending.shared_rate), so they
hold for all processes and machines together, and what a relay took in the last day still
counts after a restart (the store's per-minute counts). A message goes to the relay a
smooth weighted round robin names among those available (nginx's algorithm: over any run
of picks each relay's share stays within one pick of its weight's share); a relay whose
breaker is open, or whose daily cap is reached, is left out and its share goes to the
others.

A message is moved to another relay only when nothing of it can have reached the first
one: the body callback (`on_body`) was never called, and the relay failed as a relay, not
about this recipient:

- it refused the session (TransportError: AUTH refused, TLS, sender refused): its breaker
  opens at once;
- no session or the session was lost before the body (a DEFERRED with no reply code), or
  it said 421 (closing): its breaker opens after a few in a row.

Anything else (a reply about the recipient, anything after the body started) is the
message's own outcome, returned as it is, so nobody is mailed twice. An open breaker
closes again after a cooldown (MAILER_BREAKER_COOLDOWN, doubling each time it opens again,
up to MAILER_BREAKER_COOLDOWN_MAX); the next failure opens it again at once.

When no relay is available at all, the one whose breaker opened first is tried anyway,
so the engine sees the real failure and pauses the campaign as it does for one relay.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mailer.config import RelaySettings, Settings
from mailer.delivery.base import Transport
from mailer.delivery.smtp import REFUSAL_SHARED, SmtpTransport
from mailer.errors import TransportError
from mailer.logs import fields
from mailer.models import DeliveryStatus, Outcome, OutgoingMessage
from mailer.sending.policy import CircuitBreaker
from mailer.sending.ports import RateBudget
from mailer.sending.ratelimit import Limit, RateLimiter, Wait
from mailer.sending.shared_rate import RateCapped, SharedRateLimiter, Slot

log = logging.getLogger("mailer.relays")

_STREAK_TO_OPEN = 3  # relay-level failures in a row (before any body) that open a breaker
_CAPPED_SOON = 1.0  # seconds: a daily cap freeing later than this leaves the relay out
# A relay with a daily cap and no rate of its own: MAILER_RATE_LIMIT bounds every relay's
# sum, the relay's budget only counts.
_UNPACED = 1e9
# Slots of a capped relay one sender may hold booked ahead, as a share of the cap: the
# others are told "capped" while they sit unused (they are handed back on close).
_GRANT_SHARE_OF_CAP = 50


def relay_budget(name: str) -> str:
    """The name of a relay's budget in the store (rate_budget seeds it from the ledger's
    messages of that relay)."""
    return f"relay:{name}"


@dataclass(slots=True)
class RelayState:
    """One relay: its transport, limits, breaker and place in the round robin."""

    name: str
    weight: float
    transport: Transport
    limiter: RateLimiter | SharedRateLimiter | None
    breaker: CircuitBreaker
    current: float = 0.0  # smooth weighted round robin's running credit
    streak: int = 0  # relay-level failures in a row
    opened: int = 0  # times opened in a row (the cooldown doubles with each)
    open_until: float = -math.inf
    opened_at: float = -math.inf
    reason: str = ""
    sent: int = field(default=0)

    def is_open(self, now: float) -> bool:
        return now < self.open_until

    def capped(self) -> bool:
        """At its daily cap, as last known: a shared limiter reports what the store said
        at its last booking (no store call here, on the event loop)."""
        if self.limiter is None:
            return False
        wait = self.limiter.next_wait()
        return wait.limit is Limit.DAILY and wait.seconds > _CAPPED_SOON


class RelayPool:
    """A Transport over several relays; see the module docstring."""

    def __init__(
        self,
        relays: Sequence[RelayState],
        *,
        cooldown: float = 60.0,
        cooldown_max: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not relays:
            raise ValueError("at least one relay is needed")
        self.relays = list(relays)
        self._cooldown = cooldown
        self._cooldown_max = cooldown_max
        self._clock = clock

    # -- the Transport protocol ---------------------------------------------------------

    async def send(
        self, message: OutgoingMessage, *, on_body: Callable[[], None] | None = None
    ) -> Outcome:
        tried: set[str] = set()
        refused: TransportError | None = None
        failed: Outcome | None = None
        capped: set[str] = set()  # found at their daily cap when their slot was booked
        while (relay := self._choose(tried, capped)) is not None:
            reached = False

            def body() -> None:
                nonlocal reached
                if on_body is not None:
                    on_body()  # raises when the run stopped meanwhile: the body stays here
                reached = True

            slot = None
            if relay.limiter is not None:
                try:
                    slot = await relay.limiter.take()
                except RateCapped:
                    # Its daily cap was reached meanwhile (by another sender, or this one's
                    # other tasks): nothing was sent; it is left out, not counted as tried.
                    capped.add(relay.name)
                    continue
            tried.add(relay.name)
            try:
                outcome = await relay.transport.send(message, on_body=body)
            except TransportError as exc:
                if reached:  # not raised after the body today; never move such a message
                    raise
                self._unused(relay, slot)
                if not relay.is_open(self._clock()):
                    # Once: the sends that waited with this one share its refusal
                    # (SmtpTransport), and each would double the cooldown again.
                    self._open(relay, str(exc))
                refused = exc
                continue
            except BaseException:  # held back (the run stopped), cancelled: never sent here
                if not reached:
                    self._unused(relay, slot)
                raise
            if not reached and _relay_failure(outcome):
                self._unused(relay, slot)
                relay.streak += 1
                if relay.streak >= _STREAK_TO_OPEN:
                    self._open(relay, outcome.reply)
                failed = replace(outcome, relay=relay.name)
                continue
            self._record(relay, outcome)
            return replace(outcome, relay=relay.name)
        # Every relay was tried for this message and failed as a relay: the engine decides
        # (a refused session pauses the campaign; lost connections count towards RELAY_DOWN).
        if failed is not None:
            return failed
        assert refused is not None  # _choose returns None only once a relay was tried
        raise refused

    @staticmethod
    def _unused(relay: RelayState, slot: Slot | None) -> None:
        """The relay's slot for a message that did not reach it (its daily cap would
        count it: a trial's relay capped at 200 took 197 after stops that held messages
        back)."""
        if relay.limiter is not None:
            relay.limiter.give_back(slot)

    async def aclose(self) -> None:
        """Close every relay's connections, and hand back the slots of their shared budgets
        booked and not used (the daily caps would count them)."""
        for relay in self.relays:
            await relay.transport.aclose()
            if isinstance(relay.limiter, SharedRateLimiter):
                try:
                    await relay.limiter.close()
                except Exception as exc:  # the store is down: the slots count until tomorrow
                    log.warning(
                        fields(event="relay-slots-not-returned", relay=relay.name, error=str(exc))
                    )

    async def __aenter__(self) -> RelayPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- choosing -----------------------------------------------------------------------

    def _choose(self, tried: set[str], capped: set[str]) -> RelayState | None:
        """The next relay by smooth weighted round robin among the available ones; when
        none is available (and this message has tried none), the one that opened first.
        `capped`: relays this message found at their daily cap, left out like tried ones
        (capped() says so too, but only as long as the cap's wait is known)."""
        now = self._clock()
        candidates = [r for r in self.relays if r.name not in tried and r.name not in capped]
        available = [r for r in candidates if not r.is_open(now) and not r.capped()]
        if not available:
            if tried:
                return None
            opened = [r for r in candidates if r.is_open(now)]
            if not opened:  # every relay has reached its daily cap
                raise _every_relay_capped(self.relays)
            return min(opened, key=lambda r: r.opened_at)
        total = sum(r.weight for r in available)
        for relay in available:
            relay.current += relay.weight
        chosen = max(available, key=lambda r: r.current)
        chosen.current -= total
        return chosen

    # -- the breaker --------------------------------------------------------------------

    def _record(self, relay: RelayState, outcome: Outcome) -> None:
        relay.streak = 0
        relay.breaker.record(outcome)
        if outcome.status is DeliveryStatus.SENT:
            relay.sent += 1
            relay.opened = 0
        if relay.breaker.tripped:
            self._open(relay, relay.breaker.explain())

    def _open(self, relay: RelayState, reason: str) -> None:
        now = self._clock()
        seconds = min(self._cooldown * 2**relay.opened, self._cooldown_max)
        relay.opened = min(relay.opened + 1, 30)
        relay.open_until, relay.opened_at = now + seconds, now
        relay.streak, relay.reason = 0, reason
        relay.breaker = CircuitBreaker(
            window=relay.breaker.window, threshold=relay.breaker.threshold
        )
        log.warning(
            fields(
                event="relay-open",
                relay=relay.name,
                seconds=f"{seconds:.0f}",
                reason=reason,
                others=", ".join(r.name for r in self.relays if r is not relay),
            )
        )


def _every_relay_capped(relays: Sequence[RelayState]) -> RateCapped:
    """Every relay at its daily cap: no fault of theirs, so not a pause for the relays'
    sake (a breaker, retried every cool-down) but a cap, as MAILER_DAILY_LIMIT's: the run
    stops CAPPED, the campaign stays sending, and a worker goes on when the first cap
    frees (its wait, as each limiter last knew it)."""
    waits = [r.limiter.next_wait().seconds for r in relays if r.limiter is not None]
    soonest = min((seconds for seconds in waits if seconds > 0), default=_CAP_WAIT_UNKNOWN)
    return RateCapped(Wait(soonest, Limit.DAILY))


_CAP_WAIT_UNKNOWN = 3600.0  # seconds: try again in an hour if no limiter knows better


def _relay_failure(outcome: Outcome) -> bool:
    """A failure of the relay rather than about the recipient (before the body): no
    session, a session lost, or 421 (the relay is closing)."""
    return outcome.status is DeliveryStatus.DEFERRED and outcome.code in (None, 421)


def transport_for(settings: Settings, store: RateBudget | None = None) -> SmtpTransport | RelayPool:
    """What sends through the configured relays: the single relay's SMTP pool, or with
    MAILER_RELAYS one pool per relay, spread by weight."""
    if settings.relays:
        return relay_pool(settings, store)
    return SmtpTransport.from_settings(settings)


def relay_pool(settings: Settings, store: RateBudget | None = None) -> RelayPool:
    """The pool for MAILER_RELAYS: one SMTP pool per relay, each relay's rate and daily
    cap a budget in `store` shared with every other sender (see relay_limiter)."""
    states = []
    for relay in settings.relays:
        states.append(
            RelayState(
                name=relay.name,
                weight=relay.weight,
                transport=SmtpTransport(
                    host=relay.host,
                    port=relay.port,
                    security=relay.security,
                    username=relay.username,
                    password=relay.password.get_secret_value() if relay.password else None,
                    timeout=settings.smtp_timeout,
                    connections=relay.concurrency,
                    messages_per_connection=settings.messages_per_connection,
                    ca_file=settings.smtp_ca_file,
                    # Over by the time the relay is tried again, which must reach it: the
                    # first cooldown, or its maximum if that is set lower (a review).
                    refusal_shared=min(
                        REFUSAL_SHARED,
                        min(settings.breaker_cooldown, settings.breaker_cooldown_max) / 2,
                    ),
                ),
                limiter=relay_limiter(relay, store),
                breaker=CircuitBreaker(
                    window=settings.breaker_window, threshold=settings.breaker_threshold
                ),
            )
        )
    return RelayPool(
        states, cooldown=settings.breaker_cooldown, cooldown_max=settings.breaker_cooldown_max
    )


def relay_limiter(
    relay: RelaySettings, store: RateBudget | None, **options: Any
) -> RateLimiter | SharedRateLimiter | None:
    """The relay's rate and daily cap: with a store, its budget there (`relay:NAME`), so
    they hold for every process and machine sharing the store, and the cap counts what the
    relay took in the last day before a restart (the store's per-minute counts, seeded
    once from the ledger). Without a store (a caller that has none), for this process
    alone. `options` go to SharedRateLimiter (tests inject a clock)."""
    if relay.rate_limit is None and relay.daily_limit is None:
        return None
    per_second = relay.rate_limit or _UNPACED
    if store is None:
        return RateLimiter(per_second=per_second, per_day=relay.daily_limit)
    max_grant = 256
    if relay.daily_limit is not None:
        max_grant = max(1, min(max_grant, relay.daily_limit // _GRANT_SHARE_OF_CAP))
    return SharedRateLimiter(
        store,
        per_second=per_second,
        per_day=relay.daily_limit,
        budget=relay_budget(relay.name),
        # A cap freeing later than this raises RateCapped: the message goes to another
        # relay instead of waiting, possibly for hours.
        patience=_CAPPED_SOON,
        **{"max_grant": max_grant, **options},
    )
