"""What an SMTP outcome means for a ledger row: retry policy and the circuit breaker."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailer.models import DeliveryStatus, DueDelivery, Outcome, RecordedOutcome


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    first_delay: float
    max_attempts: int

    def settle(
        self, delivery: DueDelivery, outcome: Outcome, *, message_id: str | None, now: datetime
    ) -> RecordedOutcome:
        """The row's new state: deferrals back off exponentially, then give up as failed."""
        attempts = delivery.attempts + 1
        status, reply, next_at = outcome.status, outcome.reply, None
        if status is DeliveryStatus.DEFERRED:
            if attempts >= self.max_attempts:
                status = DeliveryStatus.FAILED
                reply = f"gave up after {attempts} attempts; last reply: {outcome.reply}"
            else:
                next_at = now + timedelta(seconds=self.first_delay * 2 ** (attempts - 1))
        return RecordedOutcome(
            delivery_id=delivery.id,
            subscriber_id=delivery.subscriber_id,
            status=status,
            attempts=attempts,
            code=outcome.code,
            reply=reply,
            message_id=message_id,
            next_attempt_at=next_at,
            relay=outcome.relay,
        )


class CircuitBreaker:
    """Trips when most of the recent attempts failed: the relay is down or refuses us.

    Hard bounces do not count (a dead mailbox says nothing about the relay); deferrals,
    failures and unknowns do.
    """

    _BAD = frozenset({DeliveryStatus.DEFERRED, DeliveryStatus.FAILED, DeliveryStatus.UNKNOWN})

    def __init__(self, *, window: int, threshold: float) -> None:
        self.window = window
        self.threshold = threshold
        self._recent: deque[bool] = deque(maxlen=window)
        self.last_bad: Outcome | None = None

    def record(self, outcome: Outcome) -> None:
        bad = outcome.status in self._BAD
        self._recent.append(bad)
        if bad:
            self.last_bad = outcome

    @property
    def tripped(self) -> bool:
        return len(self._recent) >= self.window and (
            sum(self._recent) / len(self._recent) >= self.threshold
        )

    def explain(self) -> str:
        failed = sum(self._recent)
        last = self.last_bad
        detail = f" (last: {last.code or ''} {last.reply})".replace("( ", "(") if last else ""
        return f"{failed} of the last {len(self._recent)} attempts failed{detail}"
