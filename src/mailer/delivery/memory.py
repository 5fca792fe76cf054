"""A transport that records messages instead of sending them: dry runs and tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeAlias

from mailer.errors import TransportError
from mailer.models import DeliveryStatus, Outcome, OutgoingMessage

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
