"""MemoryTransport as a slow relay: the body is handed over first, the answer comes later.

(What it records and answers per recipient: tests/test_transport.py.)
"""

from __future__ import annotations

import asyncio

import pytest

from mailer.delivery.memory import MemoryTransport
from mailer.models import DeliveryStatus, Outcome, OutgoingMessage

MESSAGE = OutgoingMessage(
    sender="invitations@cwo.example.org",
    recipient="ada@example.org",
    message_id="<1@cwo.example.org>",
    data=b"Subject: hi\r\n\r\nhello\r\n",
)


async def test_a_slow_send_hands_the_body_over_and_records_nothing_until_it_answers() -> None:
    """With a delay, on_body is called at once (from then on the relay may have the
    message, as with a real relay busy after DATA); the message is recorded only when the
    answer comes, so a send cancelled while waiting has no outcome."""
    transport = MemoryTransport(delay=3600.0)
    handed_over: list[str] = []
    sending = asyncio.create_task(
        transport.send(MESSAGE, on_body=lambda: handed_over.append(MESSAGE.recipient))
    )
    await asyncio.sleep(0)  # one turn of the loop: the send runs up to its wait
    assert handed_over == [MESSAGE.recipient]
    assert not sending.done()
    assert transport.messages == []
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    assert (transport.messages, transport.outcomes) == ([], [])


async def test_a_slow_send_answers_with_its_outcome_after_the_delay() -> None:
    deferred = Outcome(DeliveryStatus.DEFERRED, 451, "4.3.0 try later")
    transport = MemoryTransport({MESSAGE.recipient: deferred}, delay=0.01)
    assert await transport.send(MESSAGE) == deferred
    assert (transport.messages, transport.outcomes) == ([MESSAGE], [deferred])
    assert transport.sent == []


def test_a_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="delay"):
        MemoryTransport(delay=-1.0)
