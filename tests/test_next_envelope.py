"""A message's envelope sent right after the previous message's final dot (RFC 2920), on
one session (delivery/smtp.py: `_take_next`, `_release`), against a scripted relay.

What must hold whatever happens to the first message: the second is delivered exactly
once, never counted as sent unless the relay said so to its own dot, and the rule for the
first message's dot (DEFERRED only if it never reached the kernel) is unchanged by the
bytes that follow it in the same write.
"""

from __future__ import annotations

import asyncio

import pytest

from mailer.delivery.smtp import SmtpTransport
from mailer.models import DeliveryStatus, Outcome, OutgoingMessage
from scripted_relay import Relay, Start, polite

pytestmark = pytest.mark.every_event_loop

SENDER = "invitations@example.org"
# As in test_transport_faults: more than the kernels hold once the relay stops reading.
BIG_BODY = b"Subject: big\r\n\r\n" + (b"x" * 996 + b"\r\n") * 8000


def body(recipient: str) -> bytes:
    return b"Subject: hello\r\n\r\nfor " + recipient.encode() + b"\r\n"


def message(recipient: str, data: bytes | None = None) -> OutgoingMessage:
    return OutgoingMessage(SENDER, recipient, f"<{recipient}>", data or body(recipient))


def one_write_a_message() -> bool:
    """On asyncio's own loop the envelope goes in the same write as the dot; on another
    loop (uvloop) in a write of its own once the dot has left (`exact_flow`)."""
    return isinstance(asyncio.get_running_loop(), asyncio.SelectorEventLoop)


def verbs(relay: Relay, index: int) -> list[bytes]:
    return [line[:4].upper() for line in relay.connections[index].lines]


async def send_in_order(smtp: SmtpTransport, recipients: list[str]) -> list[Outcome]:
    """One task each, started in this order: with one connection the first takes it and
    the others wait for it, in turn."""
    tasks = [asyncio.create_task(smtp.send(message(r))) for r in recipients]
    return list(await asyncio.gather(*tasks))


async def test_the_next_envelope_follows_each_final_dot(start_relay: Start) -> None:
    relay, smtp = await start_relay(Relay())
    recipients = [f"r{i}@example.org" for i in range(5)]
    outcomes = await send_in_order(smtp, recipients)
    assert [o.status for o in outcomes] == [DeliveryStatus.SENT] * 5
    assert relay.messages == [body(r) for r in recipients]  # once each, in order
    assert len(relay.connections) == 1
    assert verbs(relay, 0) == [b"EHLO"] + [b"MAIL", b"RCPT", b"DATA"] * 5
    if one_write_a_message():
        # The relay read each dot and the next MAIL FROM together, four times.
        joined = [s for s in relay.connections[0].segments if b"\r\n.\r\nMAIL FROM:" in s]
        assert len(joined) == 4


async def test_a_refused_dot_with_an_envelope_behind_it_retires_the_session(
    start_relay: Start,
) -> None:
    """The reply to a dot ends that transaction (RFC 5321 4.1.1.4), so no RSET (it would
    cancel the envelope behind the dot); but a relay that refused early and also answers
    the dot would have that answer taken for the next MAIL reply. So the session is
    closed and the next message starts again on a new one, once."""
    relay, smtp = await start_relay(Relay(end_replies=[b"554 5.7.1 refused as spam\r\n"]))
    first, second = await send_in_order(smtp, ["a@example.org", "b@example.org"])
    assert (first.status, first.code) == (DeliveryStatus.FAILED, 554)
    assert second.status is DeliveryStatus.SENT
    assert relay.messages == [body("b@example.org")]
    assert len(relay.connections) == 2
    assert b"RSET" not in verbs(relay, 0) + verbs(relay, 1)


async def test_a_421_to_the_dot_sends_the_next_message_once_on_a_new_session(
    start_relay: Start,
) -> None:
    relay, smtp = await start_relay(Relay(end_replies=[b"421 4.3.2 shutting down\r\n"]))
    first, second = await send_in_order(smtp, ["a@example.org", "b@example.org"])
    assert (first.status, first.code) == (DeliveryStatus.DEFERRED, 421)
    assert second.status is DeliveryStatus.SENT
    assert relay.messages == [body("b@example.org")]
    assert len(relay.connections) == 2


async def test_a_relay_gone_after_the_dot_leaves_it_unknown_and_the_next_goes_once(
    start_relay: Start,
) -> None:
    """The relay hangs up after reading the first dot: the first message may have been
    delivered (UNKNOWN, never resent); the second's body never went, so it goes once, on
    a new session, and counts as sent."""
    relay, smtp = await start_relay(Relay(end_replies=[None]))
    first, second = await send_in_order(smtp, ["a@example.org", "b@example.org"])
    assert first.status is DeliveryStatus.UNKNOWN
    assert second.status is DeliveryStatus.SENT
    assert relay.unanswered == [body("a@example.org")]
    assert relay.messages == [body("b@example.org")]
    assert len(relay.connections) == 2


async def test_a_refused_recipient_after_a_dot_is_reset_and_the_session_goes_on(
    start_relay: Start,
) -> None:
    refused = False

    def no_such_user(line: bytes) -> bytes | None:
        nonlocal refused
        if line.upper().startswith(b"RCPT") and b"gone@" in line:
            refused = True
            return b"550 5.1.1 no such user\r\n"
        if line.upper() == b"DATA" and refused:
            refused = False
            return b"503 5.5.1 no valid recipients\r\n"
        return polite(line)

    relay, smtp = await start_relay(Relay(answer=no_such_user))
    recipients = ["a@example.org", "gone@example.org", "c@example.org"]
    outcomes = await send_in_order(smtp, recipients)
    assert [o.status for o in outcomes] == [
        DeliveryStatus.SENT,
        DeliveryStatus.BOUNCED,
        DeliveryStatus.SENT,
    ]
    assert relay.messages == [body("a@example.org"), body("c@example.org")]
    assert len(relay.connections) == 1
    assert verbs(relay, 0).count(b"RSET") == 1


async def test_a_waiting_message_the_relay_cannot_take_fails_alone(start_relay: Start) -> None:
    """An address needing SMTPUTF8, which this relay does not offer: the message is not
    put after the dot, and fails on its own; the others go."""
    relay, smtp = await start_relay(Relay())
    outcomes = await send_in_order(smtp, ["a@example.org", "zoë@example.org", "c@example.org"])
    assert [o.status for o in outcomes] == [
        DeliveryStatus.SENT,
        DeliveryStatus.FAILED,
        DeliveryStatus.SENT,
    ]
    assert "SMTPUTF8" in outcomes[1].reply
    assert relay.messages == [body("a@example.org"), body("c@example.org")]


async def test_the_dot_held_back_with_an_envelope_behind_it_is_deferred_and_never_leaves(
    start_relay: Start,
) -> None:
    """The relay stops reading after its 354; the first message's body, dot and the next
    envelope wait in our buffer until the timeout. What matters is the dot alone: it never
    reached the kernel, so the message is DEFERRED, and it must never reach the relay
    later (it will be sent again). The second message goes once, on a new session."""
    hold = asyncio.Event()
    relay, smtp = await start_relay(Relay(hold_after_354=hold), reply_timeout=1.0)
    first_task = asyncio.create_task(smtp.send(message("a@example.org", BIG_BODY)))
    second_task = asyncio.create_task(smtp.send(message("b@example.org")))
    first = await first_task
    hold.set()  # the relay reads on, on both sessions
    second = await second_task
    await smtp.aclose()
    await asyncio.wait_for(relay.connections[0].ended.wait(), 30)
    assert first.status is DeliveryStatus.DEFERRED
    assert second.status is DeliveryStatus.SENT
    assert relay.messages == [body("b@example.org")]
    assert relay.unanswered == []


async def test_a_cancelled_send_whose_envelope_is_on_the_wire_sends_nothing(
    start_relay: Start,
) -> None:
    """The second send is cancelled after its envelope followed the first dot: its body
    never goes, the session (in the middle of its transaction) is not reused, and the
    pool goes on."""
    if not one_write_a_message():
        pytest.skip("the envelope goes in a write of its own here; the relay cannot see it")
    hold = asyncio.Event()
    relay, smtp = await start_relay(Relay(hold_end_reply=hold))
    first_task = asyncio.create_task(smtp.send(message("a@example.org")))
    second_task = asyncio.create_task(smtp.send(message("b@example.org")))

    async def envelope_arrived() -> None:
        while not (
            relay.connections
            and b"RCPT TO:<b@example.org>" in b"".join(relay.connections[0].segments)
        ):
            relay.arrived.clear()
            await relay.arrived.wait()

    await asyncio.wait_for(envelope_arrived(), 30)
    second_task.cancel()
    hold.set()
    first = await first_task
    with pytest.raises(asyncio.CancelledError):
        await second_task
    third = await smtp.send(message("c@example.org"))
    assert first.status is DeliveryStatus.SENT
    assert third.status is DeliveryStatus.SENT
    assert relay.messages == [body("a@example.org"), body("c@example.org")]
    assert len(relay.connections) == 2


async def test_no_envelope_follows_the_last_dot_a_session_may_carry(start_relay: Start) -> None:
    relay, smtp = await start_relay(Relay(), messages_per_connection=2)
    recipients = [f"r{i}@example.org" for i in range(5)]
    outcomes = await send_in_order(smtp, recipients)
    await smtp.aclose()
    assert [o.status for o in outcomes] == [DeliveryStatus.SENT] * 5
    assert relay.messages == [body(r) for r in recipients]
    assert len(relay.connections) == 3
    for index in range(3):
        assert verbs(relay, index).count(b"MAIL") <= 2
        assert verbs(relay, index)[-1] == b"QUIT"
