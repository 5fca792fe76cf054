"""The seam between the campaign engine and the wire: `send(message) -> Outcome`.

`SmtpTransport` keeps a pool of at most `connections` SMTP sessions (aiosmtplib sends one
message at a time per session, so the pool size *is* the concurrency). `MemoryTransport`
records messages for dry runs and tests.

Transport failures come in two kinds (the full table is in `mailer.smtp_replies`):

- per message, `send()` returns an Outcome: SENT, DEFERRED (retry later), BOUNCED (hard
  bounce), FAILED (policy/content refusal, do not suppress), UNKNOWN (the connection was
  lost after the final dot: the message may have been delivered). DEFERRED with
  `code=None` means the server never answered (network, timeout, cannot connect).
- per session, `send()` raises TransportError when retrying cannot help (TLS certificate
  or handshake failure, AUTH rejected with 5xx, STARTTLS/AUTH not offered, MAIL FROM
  refused with 5xx): the engine should pause the campaign and show the error's hint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, TypeAlias

from mailer.errors import TransportError
from mailer.models import DeliveryStatus, Outcome, OutgoingMessage
from mailer.smtp import SmtpTransport
from mailer.smtp_replies import classify_reply

__all__ = [
    "MemoryTransport",
    "SmtpTransport",
    "Transport",
    "classify_reply",
]


class Transport(Protocol):
    """What the engine needs from a sender."""

    async def send(
        self, message: OutgoingMessage, *, on_body: Callable[[], None] | None = None
    ) -> Outcome:
        """Deliver one message. `on_body` is called just before the message body goes to
        the relay: from then on the relay may have it (the engine journals that moment)."""
        ...

    async def aclose(self) -> None: ...


OutcomeSource: TypeAlias = (
    Mapping[str, Outcome | BaseException] | Callable[[OutgoingMessage], Outcome]
)


class MemoryTransport:
    """Records every message instead of sending it; for dry runs and tests.

    `outcomes` decides what each send returns: a mapping from recipient address to an
    Outcome (or an exception to raise, e.g. TransportError to simulate a dead relay), or
    a callable taking the message. Recipients not in the mapping get `default`.
    """

    def __init__(
        self,
        outcomes: OutcomeSource | None = None,
        *,
        default: Outcome | None = None,
    ) -> None:
        self._outcomes = outcomes
        self._default = default or Outcome(DeliveryStatus.SENT, 250, "2.0.0 Recorded in memory")
        self.messages: list[OutgoingMessage] = []
        self.outcomes: list[Outcome] = []
        self.closed = False

    @property
    def sent(self) -> list[OutgoingMessage]:
        """The messages whose outcome was SENT (what a relay would have accepted)."""
        return [
            message
            for message, outcome in zip(self.messages, self.outcomes, strict=True)
            if outcome.status is DeliveryStatus.SENT
        ]

    async def send(
        self, message: OutgoingMessage, *, on_body: Callable[[], None] | None = None
    ) -> Outcome:
        if self.closed:
            raise TransportError("the transport is closed")
        if callable(self._outcomes):
            result: Outcome | BaseException = self._outcomes(message)
        elif self._outcomes is not None:
            result = self._outcomes.get(message.recipient, self._default)
        else:
            result = self._default
        if isinstance(result, BaseException):
            raise result
        if on_body is not None:
            on_body()
        self.messages.append(message)
        self.outcomes.append(result)
        return result

    async def aclose(self) -> None:
        self.closed = True
