"""The seam between the campaign engine and the wire: `send(message) -> Outcome`.

Implementations: `mailer.delivery.smtp.SmtpTransport` (a pool of SMTP sessions: the pool
size *is* the concurrency) and `mailer.delivery.memory.MemoryTransport` (dry runs, tests).

Transport failures come in two kinds (the full table is in `mailer.delivery.replies`):

- per message, `send()` returns an Outcome: SENT, DEFERRED (retry later), BOUNCED (hard
  bounce), FAILED (policy/content refusal, do not suppress), UNKNOWN (the connection was
  lost after the final dot: the message may have been delivered). DEFERRED with
  `code=None` means the server never answered (network, timeout, cannot connect).
- per session, `send()` raises TransportError when retrying cannot help (TLS certificate
  or handshake failure, AUTH rejected with 5xx, STARTTLS/AUTH not offered, MAIL FROM
  refused with 5xx): the engine should pause the campaign and show the error's hint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from mailer.models import Outcome, OutgoingMessage


class Transport(Protocol):
    """What the engine needs from a sender."""

    async def send(
        self, message: OutgoingMessage, *, on_body: Callable[[], None] | None = None
    ) -> Outcome:
        """Deliver one message. `on_body` is called just before the message body goes to
        the relay: from then on the relay may have it (the engine journals that moment)."""
        ...

    async def aclose(self) -> None: ...
