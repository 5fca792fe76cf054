"""The pipelined SMTP dialogue (delivery/session.py, delivery/smtp.py) under faults, against a
scripted relay: what the relay really received, for each outcome the transport returned.

The invariant under test: DEFERRED (resent later) only when the relay cannot have the
message; SENT only when it said so to the final dot; a session reused only in step.
The relay is tests/scripted_relay.py (fixture `start`).
"""

from __future__ import annotations

import asyncio
import random
import tracemalloc

import pytest

from mailer.config import SmtpSecurity
from mailer.models import DeliveryStatus, OutgoingMessage
from scripted_relay import Relay, Start, polite

# On asyncio's loop and on uvloop's (tests/conftest.py): a sender runs on either.
pytestmark = pytest.mark.every_event_loop

SENDER = "invitations@example.org"
BODY = b"From: invitations@example.org\r\nSubject: Hi\r\n\r\nHello\r\n"
# 8 MB: more than the kernels can hold between the two ends once the relay stops
# reading (its receive buffer is pinned small, in scripted_relay; the client's send buffer grows to
# 4 MiB at most on this machine).
BIG_BODY = b"Subject: big\r\n\r\n" + (b"x" * 996 + b"\r\n") * 8000
SECURITIES = [SmtpSecurity.NONE, SmtpSecurity.STARTTLS, SmtpSecurity.TLS]


def message(recipient: str = "ada@example.org", data: bytes = BODY) -> OutgoingMessage:
    return OutgoingMessage(SENDER, recipient, f"<{recipient}>", data)


async def ended(relay: Relay, index: int = 0) -> None:
    await asyncio.wait_for(relay.connections[index].ended.wait(), 30)


def pipelining_or_not() -> pytest.MarkDecorator:
    return pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-by-one"])


# -- DEFERRED must mean: the relay cannot have it ----------------------------------------


@pytest.mark.parametrize("security", SECURITIES, ids=lambda s: s.value)
async def test_a_body_deferred_after_the_relay_stalled_never_reaches_it_later(
    start_relay: Start, security: SmtpSecurity
) -> None:
    """The relay stops reading after its 354 for longer than the timeout, then reads on
    (a busy relay, not a dead one). The send gives up with the dot still in our buffers
    and says DEFERRED; the message will be sent again, so the dot must never leave."""
    hold = asyncio.Event()
    relay, smtp = await start_relay(
        Relay(security=security, hold_after_354=hold), reply_timeout=0.5
    )
    outcome = await smtp.send(message(data=BIG_BODY))
    hold.set()  # the relay reads on
    await ended(relay)
    assert outcome.status is DeliveryStatus.DEFERRED
    assert relay.messages == []  # else the resend mails the recipient twice


# -- SENT must mean: a 2xx to the final dot ----------------------------------------------


@pipelining_or_not()
@pytest.mark.parametrize(
    ("verb", "odd_reply"),
    [(b"RCPT", b"252 2.1.5 cannot verify, will try\r\n"), (b"DATA", b"250 2.0.0 ok\r\n")],
    ids=["252-to-rcpt", "250-to-data"],
)
async def test_a_2xx_in_place_of_the_354_is_not_taken_for_delivery(
    start_relay: Start, pipelining: bool, verb: bytes, odd_reply: bytes
) -> None:
    """No body went, so the relay has nothing: the outcome must not be SENT (the
    recipient would be counted as mailed and never get the message)."""

    def odd(line: bytes) -> bytes | None:
        return odd_reply if line.upper().startswith(verb) else polite(line)

    relay, smtp = await start_relay(Relay(pipelining=pipelining, answer=odd))
    outcome = await smtp.send(message())
    assert relay.messages == []
    assert outcome.status is not DeliveryStatus.SENT


# -- UNKNOWN when in doubt ---------------------------------------------------------------


@pytest.mark.parametrize("reply", [b"354 go ahead\r\n", b"600 what\r\n"], ids=["354", "600"])
async def test_a_reply_to_the_dot_that_is_no_verdict_is_unknown(
    start_relay: Start, reply: bytes
) -> None:
    """The dot reached the relay and it answered with a code that is neither 2xx, 4xx nor
    5xx: it may have the message (an unreadable reply there is UNKNOWN already)."""

    def record_anyway(line: bytes) -> bytes | None:
        return polite(line)

    relay = Relay(answer=record_anyway, end_reply=reply)
    relay, smtp = await start_relay(relay)
    outcome = await smtp.send(message())
    await smtp.aclose()
    await ended(relay)
    assert outcome.status is DeliveryStatus.UNKNOWN


# -- sessions reused only in step ----------------------------------------------------------


async def test_a_421_merged_with_the_reply_to_the_dot_retires_the_session(
    start_relay: Start,
) -> None:
    """ "250 queued" and an unsolicited "421" arrive in one read: the message is SENT, and
    the next one goes on a new session (the 421 is never paired with its MAIL)."""
    relay, smtp = await start_relay(Relay(end_reply=b"250 2.0.0 queued\r\n421 4.4.2 bye now\r\n"))
    first = await smtp.send(message("a@example.org"))
    second = await smtp.send(message("b@example.org"))
    assert (first.status, first.code) == (DeliveryStatus.SENT, 250)
    assert (second.status, second.code) == (DeliveryStatus.SENT, 250)
    assert len(relay.connections) == 2
    assert len(relay.messages) == 2


async def test_a_421_split_across_reads_while_idle_sends_the_next_message_once(
    start_relay: Start,
) -> None:
    """The relay's idle-timeout notice arrives in two pieces, the second only once the
    next envelope is on its way (then it hangs up). Either the first half has not been read
    when the next send starts (asyncio's loop here: the relay's socket has Nagle on, so the
    half waits for our next segment's ACK), and the whole 421 is read as MAIL's reply on a
    reused session; or it has (uvloop turns Nagle off), and the half-read reply retires the
    idle session. Either way the message goes on a fresh session, and only there."""
    state = {"split": False}

    def finish_the_421(line: bytes) -> bytes | None:
        if state["split"] and line.upper().startswith(b"MAIL"):
            state["split"] = False
            if len(relay.connections) == 1:
                return b"\r\n"  # ends "421 4.4.2 idle too long"
        return polite(line)

    relay, smtp = await start_relay(Relay(answer=finish_the_421))
    assert (await smtp.send(message("a@example.org"))).status is DeliveryStatus.SENT
    writer = relay.connections[0].writer
    assert writer is not None
    writer.write(b"421 4.4.2 idle too long")
    await writer.drain()
    state["split"] = True
    for _ in range(20):  # let the client's loop read the first piece
        await asyncio.sleep(0)
    second = await smtp.send(message("b@example.org"))
    assert second.status is DeliveryStatus.SENT
    assert len(relay.messages) == 2
    assert len(relay.connections) == 2


@pipelining_or_not()
@pytest.mark.parametrize("step", [b"MAIL", b"RCPT", b"DATA"])
async def test_a_421_at_each_step_defers_and_the_next_message_uses_a_new_session(
    start_relay: Start, pipelining: bool, step: bytes
) -> None:
    said = {"421": False}

    def closing(line: bytes) -> bytes | None:
        if line.upper().startswith(step) and not said["421"]:
            said["421"] = True
            return b"421 4.3.2 shutting down\r\n"
        return polite(line)

    relay, smtp = await start_relay(Relay(pipelining=pipelining, answer=closing))
    first = await smtp.send(message("a@example.org"))
    second = await smtp.send(message("b@example.org"))
    assert (first.status, first.code) == (DeliveryStatus.DEFERRED, 421)
    assert second.status is DeliveryStatus.SENT
    assert relay.messages == [BODY]
    assert len(relay.connections) == 2


@pipelining_or_not()
async def test_a_refused_rset_retires_the_session(start_relay: Start, pipelining: bool) -> None:
    def no_reset(line: bytes) -> bytes | None:
        upper = line.upper()
        if upper.startswith(b"RCPT TO:<BOB@"):
            return b"550 5.1.1 no such user\r\n"
        if upper == b"DATA" and any(b"BOB@" in seen.upper() for seen in _last_envelope()):
            return b"503 5.5.1 no valid recipients\r\n"
        if upper == b"RSET":
            return b"500 5.5.1 what?\r\n"
        return polite(line)

    relay = Relay(pipelining=pipelining, answer=no_reset)

    def _last_envelope() -> list[bytes]:
        lines = relay.connections[-1].lines
        return lines[-3:]

    relay, smtp = await start_relay(relay)
    bob = await smtp.send(message("bob@example.org"))
    ada = await smtp.send(message("ada@example.org"))
    assert (bob.status, bob.code) == (DeliveryStatus.BOUNCED, 550)
    assert ada.status is DeliveryStatus.SENT
    assert relay.messages == [BODY]
    assert len(relay.connections) == 2


@pipelining_or_not()
async def test_a_timed_out_envelope_is_never_paired_with_its_late_replies(
    start_relay: Start, pipelining: bool
) -> None:
    """MAIL's reply comes only after the client gave up: the late "250" must not answer
    the next message's MAIL (its session is closed; the next one is new)."""
    late = asyncio.Event()

    def slow_first(line: bytes) -> bytes | None:
        if line.upper().startswith(b"MAIL") and not late.is_set():
            return None  # answered late, below
        return polite(line)

    relay, smtp = await start_relay(
        Relay(pipelining=pipelining, answer=slow_first), reply_timeout=0.3
    )
    first = await smtp.send(message("a@example.org"))
    writer = relay.connections[0].writer
    assert writer is not None
    late.set()
    if not writer.is_closing():
        writer.write(b"250 2.1.0 ok, late\r\n")
    second = await smtp.send(message("b@example.org"))
    assert first.status is DeliveryStatus.DEFERRED
    assert "timed out" in first.reply
    assert second.status is DeliveryStatus.SENT
    assert relay.messages == [BODY]
    assert len(relay.connections) == 2


async def test_a_reused_session_dropped_before_any_reply_sends_the_message_once(
    start_relay: Start,
) -> None:
    """The relay reads the second message's MAIL and hangs up (RST) without a word: one
    retry on a new session (nothing of the body ever went), delivered once."""
    mails = {"seen": 0}
    relay = Relay()

    def hang_up_on_second(line: bytes) -> bytes | None:
        if line.upper().startswith(b"MAIL"):
            mails["seen"] += 1
        if mails["seen"] == 2:
            mails["seen"] += 1  # once
            writer = relay.connections[-1].writer
            assert writer is not None
            writer.transport.abort()
            return None
        return polite(line)

    relay.answer = hang_up_on_second
    relay, smtp = await start_relay(relay)
    first = await smtp.send(message("a@example.org"))
    second = await smtp.send(message("b@example.org"))
    assert (first.status, second.status) == (DeliveryStatus.SENT, DeliveryStatus.SENT)
    assert len(relay.messages) == 2
    assert len(relay.connections) == 2


async def test_a_send_cancelled_in_the_envelope_leaves_no_message_and_no_session(
    start_relay: Start,
) -> None:
    """The engine cancels send() on stop: cancelled while waiting for MAIL's reply, the
    message never reaches the relay and the session is not reused."""
    relay, smtp = await start_relay(
        Relay(answer=lambda line: None if b"slow@" in line else polite(line))
    )
    task = asyncio.create_task(smtp.send(message("slow@example.org")))
    while not any(b"slow@" in line for c in relay.connections for line in c.lines):
        relay.seen.clear()
        await relay.seen.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    after = await smtp.send(message("ada@example.org"))
    assert after.status is DeliveryStatus.SENT
    assert relay.messages == [BODY]
    assert len(relay.connections) == 2


async def test_a_reply_longer_than_any_smtp_reply_defers_and_retires_the_session(
    start_relay: Start,
) -> None:
    def endless(line: bytes) -> bytes | None:
        if b"endless@" in line:
            return b"250-" + b"x" * 70_000  # no line end, ever
        return polite(line)

    relay, smtp = await start_relay(Relay(answer=endless))
    first = await smtp.send(message("endless@example.org"))
    second = await smtp.send(message("ada@example.org"))
    assert first.status is DeliveryStatus.DEFERRED
    assert "unreadable reply" in first.reply
    assert second.status is DeliveryStatus.SENT
    assert relay.messages == [BODY]
    assert len(relay.connections) == 2


@pipelining_or_not()
async def test_many_tasks_over_a_small_pool_with_replies_split_at_random_send_each_once(
    start_relay: Start, pipelining: bool
) -> None:
    """40 messages from 10 tasks over 4 sessions, every reply cut into random pieces:
    each recipient gets its message exactly once, every outcome SENT."""
    cuts = random.Random(7)

    def split(data: bytes) -> list[bytes]:
        points = sorted(cuts.sample(range(1, len(data)), min(3, len(data) - 1)))
        return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]

    relay, smtp = await start_relay(Relay(pipelining=pipelining, chunks=split), connections=4)
    recipients = [f"r{i}@example.org" for i in range(40)]
    queue = list(recipients)
    outcomes: list[DeliveryStatus] = []

    async def worker() -> None:
        while queue:
            recipient = queue.pop()
            outcomes.append(
                (await smtp.send(message(recipient, data=recipient.encode() + b"\r\n"))).status
            )

    await asyncio.gather(*(worker() for _ in range(10)))
    assert outcomes == [DeliveryStatus.SENT] * 40
    assert sorted(relay.messages) == sorted(r.encode() + b"\r\n" for r in recipients)
    assert len(relay.connections) <= 4


# -- memory ------------------------------------------------------------------------------


async def test_a_relay_flooding_an_idle_session_costs_bounded_memory(start_relay: Start) -> None:
    """512 KB of complete replies nobody asked for, sent to an idle pooled session, then
    EOF: the first already retires the session, so keeping the rest buys nothing; the
    client must not hold a multiple of the flood (16 bytes per wire byte, unbounded)."""
    relay, smtp = await start_relay(Relay())
    assert (await smtp.send(message("a@example.org"))).status is DeliveryStatus.SENT
    writer = relay.connections[0].writer
    assert writer is not None
    flood = b"250 ok\r\n" * 8192
    tracemalloc.start()
    try:
        for _ in range(512 * 1024 // len(flood)):
            writer.write(flood)
            await writer.drain()
        writer.write_eof()
        await ended(relay)  # the client read it all, then the EOF, and closed its end
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    after = await smtp.send(message("b@example.org"))
    assert after.status is DeliveryStatus.SENT
    assert len(relay.connections) == 2
    assert peak < 4 * 1024 * 1024  # it held ~8 MB
