"""A transport that records messages instead of sending them: dry runs and tests."""

from __future__ import annotations

import asyncio
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

    `delay` makes it a slow relay: each send hands the body over (`on_body`) and then
    waits `delay` seconds for the answer, as a real relay busy after DATA does, so tests
    can pause, cancel or start a second sender while messages are in flight. A message is
    recorded only once answered: a send cancelled while waiting has no outcome here.
    """

    def __init__(
        self,
        outcomes: OutcomeSource | None = None,
        *,
        default: Outcome | None = None,
        delay: float = 0.0,
    ) -> None:
        if not delay >= 0:
            raise ValueError(f"delay must be zero or more seconds, not {delay!r}")
        self._outcomes = outcomes
        self._delay = delay
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
        if self._delay:
            await asyncio.sleep(self._delay)
        self.messages.append(message)
        self.outcomes.append(result)
        return result

    async def aclose(self) -> None:
        self.closed = True
