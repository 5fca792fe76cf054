"""RFC 2920 pipelining and the reply reader, against a scripted SMTP relay on port 0.

aiosmtpd (tests/smtp_server.py) answers like a well-behaved relay, and the transport's
tests run against it with and without PIPELINING. What it cannot show is *how* the
commands arrived, nor a server that answers out of turn, splits its replies or breaks
the rules: tests/scripted_relay.py records every read and answers from a script.
"""

from __future__ import annotations

import asyncio

import pytest

from mailer.models import DeliveryStatus, OutgoingMessage
from scripted_relay import Relay, Start, polite

# On asyncio's loop and on uvloop's (tests/conftest.py): a sender runs on either.
pytestmark = pytest.mark.every_event_loop

BODY = b"From: a@example.org\r\nSubject: Hi\r\n\r\nHello\r\n"


def single_bytes(data: bytes) -> list[bytes]:
    return [data[index : index + 1] for index in range(len(data))]


def message(recipient: str = "ada@example.org") -> OutgoingMessage:
    return OutgoingMessage("invitations@example.org", recipient, f"<{recipient}>", BODY)


def commands(segment: bytes) -> list[bytes]:
    return [line.split(b":")[0].split(b" ")[0] for line in segment.split(b"\r\n") if line]


async def test_with_pipelining_offered_mail_rcpt_and_data_leave_in_one_write(
    start_relay: Start,
) -> None:
    """Two round trips a message: the envelope in one segment, then body and dot."""
    script, smtp = await start_relay(Relay(pipelining=True))
    async with smtp:
        outcomes = [await smtp.send(message(f"r{i}@example.org")) for i in range(3)]
    assert [o.status for o in outcomes] == [DeliveryStatus.SENT] * 3
    assert len(script.messages) == 3
    assert script.messages[0] == BODY
    (conn,) = script.connections
    after_ehlo = [s for s in conn.segments if not s.startswith(b"EHLO")]
    envelopes = [s for s in after_ehlo if s.startswith(b"MAIL")]
    assert len(envelopes) == 3
    for index, segment in enumerate(envelopes):
        assert segment == (
            b"MAIL FROM:<invitations@example.org> SIZE=%d\r\n"
            b"RCPT TO:<r%d@example.org>\r\nDATA\r\n" % (len(BODY), index)
        )


async def test_without_pipelining_each_command_waits_for_its_reply(start_relay: Start) -> None:
    script, smtp = await start_relay(Relay(pipelining=False))
    async with smtp:
        outcome = await smtp.send(message())
    assert outcome.status is DeliveryStatus.SENT
    (conn,) = script.connections
    heads = [commands(s) for s in conn.segments]
    assert [b"MAIL"] in heads
    assert [b"RCPT"] in heads
    assert [b"DATA"] in heads
    assert not any(len(h) > 1 for h in heads if h[0] in (b"MAIL", b"RCPT", b"DATA"))


async def test_replies_split_into_single_bytes_are_read_in_order(start_relay: Start) -> None:
    script, smtp = await start_relay(Relay(chunks=single_bytes))
    async with smtp:
        first = await smtp.send(message("a@example.org"))
        second = await smtp.send(message("b@example.org"))
    assert (first.status, first.code, second.status) == (
        DeliveryStatus.SENT,
        250,
        DeliveryStatus.SENT,
    )
    assert len(script.messages) == 2
    assert len(script.connections) == 1


async def test_a_refused_recipient_reads_every_pipelined_reply_then_resets(
    start_relay: Start,
) -> None:
    """RCPT refused: the DATA reply (503) is read too, RSET, and the session carries on."""

    def refuse_bob(line: bytes) -> bytes | None:
        if line.startswith(b"RCPT TO:<bob@"):
            refuse_bob.refused = True  # type: ignore[attr-defined]
            return b"550 5.1.1 no such user\r\n"
        if line == b"DATA" and getattr(refuse_bob, "refused", False):
            refuse_bob.refused = False  # type: ignore[attr-defined]
            return b"503 5.5.1 no valid recipients\r\n"
        return polite(line)

    script, smtp = await start_relay(Relay(answer=refuse_bob))
    async with smtp:
        bob = await smtp.send(message("bob@example.org"))
        ada = await smtp.send(message("ada@example.org"))
    assert (bob.status, bob.code) == (DeliveryStatus.BOUNCED, 550)
    assert ada.status is DeliveryStatus.SENT
    (conn,) = script.connections
    sent = [c for segment in conn.segments for c in commands(segment)]
    assert sent.count(b"RSET") == 1
    assert len(script.messages) == 1


async def test_a_server_that_takes_data_after_refusing_the_recipient_is_left(
    start_relay: Start,
) -> None:
    """RFC 2920 forbids a 354 with no valid recipient; the session is then in the middle
    of a message we will not send, so it is closed, and nothing reaches the server."""

    def careless(line: bytes) -> bytes | None:
        if line.startswith(b"RCPT TO:<bob@"):
            return b"550 5.1.1 no such user\r\n"
        return polite(line)

    script, smtp = await start_relay(Relay(answer=careless))
    async with smtp:
        bob = await smtp.send(message("bob@example.org"))
        ada = await smtp.send(message("ada@example.org"))
    assert bob.status is DeliveryStatus.BOUNCED
    assert ada.status is DeliveryStatus.SENT
    assert len(script.connections) == 2  # bob's session was not reused
    assert script.messages == [BODY]


async def test_a_reply_out_of_turn_retires_the_idle_session(start_relay: Start) -> None:
    """A 421 sent to an idle session (without closing it) is never taken as the next
    command's reply: the next message goes on a new session, delivered once."""
    script, smtp = await start_relay(Relay())
    async with smtp:
        assert (await smtp.send(message("a@example.org"))).status is DeliveryStatus.SENT
        writer = script.connections[0].writer
        assert writer is not None
        writer.write(b"421 4.4.2 idle too long\r\n")
        await writer.drain()
        for _ in range(50):  # let the client's loop read it (no clock involved)
            await asyncio.sleep(0)
        second = await smtp.send(message("b@example.org"))
    assert second.status is DeliveryStatus.SENT
    assert second.code == 250
    assert len(script.connections) == 2
    assert len(script.messages) == 2


async def test_a_reply_that_is_not_smtp_defers_before_data(start_relay: Start) -> None:
    def garbled(line: bytes) -> bytes | None:
        return b"HTTP/1.1 400 Bad Request\r\n" if line.startswith(b"MAIL") else polite(line)

    script, smtp = await start_relay(Relay(answer=garbled))
    async with smtp:
        outcome = await smtp.send(message())
    assert outcome.status is DeliveryStatus.DEFERRED
    assert outcome.code is None
    assert "unreadable reply" in outcome.reply
    assert script.messages == []


async def test_a_multiline_reply_with_mixed_codes_is_not_smtp(start_relay: Start) -> None:
    def mixed(line: bytes) -> bytes | None:
        return b"250-fine\r\n550 not fine\r\n" if line.startswith(b"MAIL") else polite(line)

    script, smtp = await start_relay(Relay(answer=mixed))
    async with smtp:
        outcome = await smtp.send(message())
    assert outcome.status is DeliveryStatus.DEFERRED
    assert "unreadable reply" in outcome.reply
    assert script.messages == []


async def test_a_server_half_closing_during_the_body_that_still_reads_it_is_unknown(
    start_relay: Start,
) -> None:
    """The server's FIN arrives while the body waits in our buffer; we close too, which
    first hands the rest (the final dot with it) to the kernel, and the server reads it
    all. The relay may have the message: UNKNOWN, never DEFERRED (a resend would mail the
    recipient twice)."""
    big = b"Subject: big\r\n\r\n" + (b"x" * 996 + b"\r\n") * 8000  # beyond socket buffers
    script, smtp = await start_relay(Relay(eof_after_354=True))
    async with smtp:
        outcome = await smtp.send(
            OutgoingMessage("invitations@example.org", "ada@example.org", "<ada>", big)
        )
    assert outcome.status is DeliveryStatus.UNKNOWN
    await asyncio.wait_for(script.connections[0].ended.wait(), 30)  # it reads what it got
    assert script.messages == [big]
