"""The SMTP transport against a real aiosmtpd server (tests/smtp_server.py), plus the fakes."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.config import Settings, SmtpSecurity
from mailer.delivery.memory import MemoryTransport
from mailer.delivery.replies import cannot_connect, classify_reply
from mailer.delivery.smtp import SmtpTransport
from mailer.errors import TransportError
from mailer.models import DeliveryStatus, Outcome, OutgoingMessage
from smtp_server import SmtpServerProcess, SmtpTestServer, TlsFiles

# On asyncio's loop and on uvloop's (tests/conftest.py): a sender runs on either.
pytestmark = pytest.mark.every_event_loop

SENDER = "invitations@mailer.test"
BODY = b"From: invitations@mailer.test\r\nSubject: Hello\r\n\r\n.A line starting with a dot\r\n"
# 8 MB: more than this machine's socket buffers can hold (the client's send buffer grows
# to 4 MiB at most, and the faults that stop reading shrink the server's to 64 KiB).
BIG_BODY = b"Subject: big\r\n\r\n" + (b"x" * 996 + b"\r\n") * 8000
SECURITIES = [SmtpSecurity.NONE, SmtpSecurity.STARTTLS, SmtpSecurity.TLS]


def message(recipient: str = "ada@example.org", *, data: bytes = BODY) -> OutgoingMessage:
    return OutgoingMessage(SENDER, recipient, f"<{recipient}>", data)


def transport(server: SmtpTestServer, **options: Any) -> SmtpTransport:
    options.setdefault("security", SmtpSecurity.NONE)
    options.setdefault("timeout", 5.0)
    return SmtpTransport(
        host="127.0.0.1", port=server.port, local_hostname="client.test", **options
    )


@pytest.fixture(params=[True, False], ids=["pipelining", "one-by-one"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[SmtpTestServer]:
    """The server, offering PIPELINING (the client sends MAIL, RCPT and DATA in one write)
    or not (one command at a time): every test below holds for both."""
    async with SmtpTestServer(pipelining=request.param) as running:
        yield running


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return TlsFiles.create(tmp_path_factory.mktemp("tls"))


def server_with(security: SmtpSecurity, tls: TlsFiles) -> SmtpTestServer:
    """A server speaking `security`: in the clear, STARTTLS, or TLS from the first byte."""
    if security is SmtpSecurity.NONE:
        return SmtpTestServer()
    return SmtpTestServer(tls=tls, implicit_tls=security is SmtpSecurity.TLS)


def client_for(server: SmtpTestServer, security: SmtpSecurity, tls: TlsFiles) -> SmtpTransport:
    ca_file = None if security is SmtpSecurity.NONE else tls.ca_file
    return transport(server, security=security, ca_file=ca_file)


async def test_every_message_is_delivered_with_its_exact_bytes(server: SmtpTestServer) -> None:
    """Each send returns SENT with the server's code and text; the server holds the bytes."""
    async with transport(server) as smtp:
        outcomes = [await smtp.send(message(f"r{i}@example.org")) for i in range(5)]
    assert [o.status for o in outcomes] == [DeliveryStatus.SENT] * 5
    assert outcomes[0].code == 250
    assert outcomes[0].reply == "2.0.0 Queued as 1"
    assert server.recipients == [f"r{i}@example.org" for i in range(5)]
    assert {m.mail_from for m in server.messages} == {SENDER}
    assert all(m.data == BODY for m in server.messages)  # dot-stuffing undone exactly
    assert server.connections_total == 1
    assert server.commands["QUIT"] == 1


async def test_an_invitation_goes_as_built_and_arrives_whole(server: SmtpTestServer) -> None:
    """An invitation is wire-ready (no dot-stuffing pass): sent as it is, the server,
    which undoes dot-stuffing, holds its exact bytes, although its long links put a "."
    right after a soft line break (written `=2E`, so no line of the message starts with
    a dot). A message not marked wire-ready still has its leading dots doubled (BODY)."""
    from test_compose import SENDER as IDENTITY
    from test_compose import ZOE, make_builder

    builder = make_builder()
    dotted = [
        builder.build(
            ZOE,
            unsubscribe_url=f"{IDENTITY.base_url}/u/{'t' * width}.{'u' * 30}",
            rsvp_url=f"{IDENTITY.base_url}/r/{'r' * width}.{'s' * 30}",
        )
        for width in range(16, 80)
    ]
    assert all(m.wire_ready for m in dotted)
    assert any(b"=\r\n=2E" in m.data for m in dotted)  # the case is really there
    async with transport(server) as smtp:
        outcomes = [await smtp.send(m) for m in [*dotted, message()]]
    assert {o.status for o in outcomes} == {DeliveryStatus.SENT}
    assert [m.data for m in server.messages] == [m.data for m in dotted] + [BODY]


@pytest.mark.parametrize(
    "data",
    [BODY, b"Subject: bare LF\n\n.line one\nline two", b"Subject: CR\r\rold Mac\r"],
    ids=["crlf", "bare-lf", "bare-cr"],
)
async def test_size_is_the_message_as_the_server_holds_it(
    server: SmtpTestServer, data: bytes
) -> None:
    """MAIL FROM's SIZE= (RFC 1870: CRLF line ends, dot-stuffing and the final dot not
    counted) is the size of what the server holds, whatever line ends the message had
    (it used to count the bytes before CRLF conversion: too few for a bare-LF message)."""
    async with transport(server) as smtp:
        outcome = await smtp.send(message(data=data))
    assert outcome.status is DeliveryStatus.SENT
    [received] = server.messages
    assert f"SIZE={len(received.data)}" in received.mail_options


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        ("450 4.2.1 Mailbox busy", DeliveryStatus.DEFERRED),
        ("550 5.1.1 No such user", DeliveryStatus.BOUNCED),
        ("550 No such user here", DeliveryStatus.BOUNCED),
        ("550 5.7.1 Rejected by policy", DeliveryStatus.FAILED),
    ],
)
async def test_a_refused_recipient_gets_its_outcome_and_the_session_survives(
    server: SmtpTestServer, reply: str, status: DeliveryStatus
) -> None:
    """A RCPT refusal maps to its outcome, keeps code and text, is RSET, and the same
    connection then carries the next message."""
    server.rcpt_replies["no@example.org"] = reply
    async with transport(server) as smtp:
        refused = await smtp.send(message("no@example.org"))
        accepted = await smtp.send(message("yes@example.org"))
    assert refused == Outcome(status, int(reply[:3]), reply[4:])
    assert accepted.status is DeliveryStatus.SENT
    assert server.recipients == ["yes@example.org"]
    assert server.commands["RSET"] == 1
    assert server.connections_total == 1


async def test_a_policy_rejection_is_failed_not_bounced(server: SmtpTestServer) -> None:
    """5.7.1 in the reply text marks a policy rejection: FAILED, so the address is kept."""
    server.end_reply = "554 5.7.1 Message rejected as spam"
    async with transport(server) as smtp:
        outcome = await smtp.send(message())
    assert outcome.status is DeliveryStatus.FAILED
    assert outcome.is_policy_rejection
    assert server.commands["RSET"] == 1


@pytest.mark.parametrize(
    ("code", "reply", "status"),
    [
        (250, "2.0.0 OK", DeliveryStatus.SENT),
        (421, "4.7.0 Try again later", DeliveryStatus.DEFERRED),
        (452, "4.3.1 Insufficient storage", DeliveryStatus.DEFERRED),
        (550, "5.2.1 Mailbox disabled", DeliveryStatus.BOUNCED),
        (554, "5.7.9 Message not accepted for policy reasons", DeliveryStatus.FAILED),
        (552, "5.3.4 Message too big", DeliveryStatus.FAILED),
        (554, "5.6.0 Content rejected", DeliveryStatus.FAILED),
        (552, "5.2.2 Mailbox full", DeliveryStatus.BOUNCED),
        (550, "Requested action not taken", DeliveryStatus.BOUNCED),
        (552, "Too much mail data", DeliveryStatus.FAILED),
        (552, "Requested mail action aborted: exceeded storage allocation", DeliveryStatus.FAILED),
    ],
)
def test_replies_are_classified_by_code_and_enhanced_status(
    code: int, reply: str, status: DeliveryStatus
) -> None:
    """2xx sent, 4xx deferred, 5xx bounced, except message refusals (5.7, 5.6, 5.3.4,
    5.2.3, and a bare 552: too big, not a dead mailbox, so never suppressed)."""
    assert classify_reply(code, reply) is status


async def test_a_temporary_sender_refusal_is_deferred(server: SmtpTestServer) -> None:
    """451 to MAIL FROM defers the message and the session is reset for the next one."""
    server.mail_reply = "451 4.3.0 Try later"
    async with transport(server) as smtp:
        outcome = await smtp.send(message())
        server.mail_reply = None
        assert (await smtp.send(message())).status is DeliveryStatus.SENT
    assert outcome == Outcome(DeliveryStatus.DEFERRED, 451, "4.3.0 Try later")
    assert server.connections_total == 1


async def test_a_permanent_sender_refusal_raises_because_it_hits_every_message(
    server: SmtpTestServer,
) -> None:
    """5xx to MAIL FROM is a configuration problem: TransportError, no per-message verdict."""
    server.mail_reply = "553 5.7.1 Sender not owned by user"
    async with transport(server) as smtp:
        with pytest.raises(TransportError) as caught:
            await smtp.send(message())
    assert caught.value.code == 553
    assert caught.value.hint


@pytest.mark.parametrize(
    ("reply", "about_size"),
    [
        ("552 5.3.4 Message size exceeds fixed limit", True),
        ("552 Too much mail data", True),  # SIZE= was sent (aiosmtpd offers SIZE)
        ("554 5.3.4 Message too big for system", True),
        ("550 5.2.3 Message length exceeds administrative limit", True),
        ("552 5.7.1 Sender address rejected", False),
        ("552 5.3.40 Not a size code", False),
    ],
)
async def test_a_size_refusal_says_so_and_not_that_the_sender_was_refused(
    server: SmtpTestServer, reply: str, about_size: bool
) -> None:
    """A relay refusing MAIL FROM for the announced size (RFC 1870's 552, or the enhanced
    codes 5.3.4 / 5.2.3 with any reply code) stops the campaign as a sender refusal does
    (every invitation is about as big), but the reason names the size and the hint does
    not send the organiser to the sender settings. Another enhanced code on a 552 is a
    refused sender, as before."""
    server.mail_reply = reply
    async with transport(server) as smtp:
        with pytest.raises(TransportError) as caught:
            await smtp.send(message())
    assert caught.value.code == int(reply[:3])
    assert caught.value.hint is not None
    if about_size:
        assert f"refuses messages of this size ({len(BODY):,} bytes)" in str(caught.value)
        assert "MAILER_FROM_ADDRESS" not in caught.value.hint
    else:
        assert "refused the sender" in str(caught.value)
        assert "MAILER_FROM_ADDRESS" in caught.value.hint


def test_a_bare_552_without_size_announced_is_a_refused_sender() -> None:
    """Without SIZE= on the MAIL FROM line, a 552 with no enhanced code cannot be about
    the size (some servers say "552 mail from invalid")."""
    from mailer.delivery.replies import is_size_refusal

    assert is_size_refusal(552, "mail from invalid", size_announced=True)
    assert not is_size_refusal(552, "mail from invalid", size_announced=False)


async def test_421_on_data_defers_and_the_next_send_reconnects(server: SmtpTestServer) -> None:
    """421 to DATA closes the session: DEFERRED with 421, then a fresh connection works."""
    server.data_reply = "421 4.3.2 System shutting down"
    async with transport(server) as smtp:
        outcome = await smtp.send(message())
        server.data_reply = None
        after = await smtp.send(message())
    assert outcome == Outcome(DeliveryStatus.DEFERRED, 421, "4.3.2 System shutting down")
    assert after.status is DeliveryStatus.SENT
    assert server.connections_total == 2


@pytest.mark.parametrize("data", [BODY, BIG_BODY], ids=["small", "8MB"])
async def test_a_disconnect_mid_data_defers_and_a_later_send_reconnects(
    server: SmtpTestServer, data: bytes
) -> None:
    """The server resets the connection right after its 354, as a crashed relay does:
    whatever the size, the body (and its final dot) never left, so the message is DEFERRED
    (no code), and the next send succeeds on a new connection."""
    server.drop_mid_data = 1
    async with transport(server) as smtp:
        dropped = await smtp.send(message(data=data))
        after = await smtp.send(message())
    assert dropped.status is DeliveryStatus.DEFERRED
    assert dropped.code is None
    assert "during DATA" in dropped.reply
    assert after.status is DeliveryStatus.SENT
    assert len(server.messages) == 1
    assert server.connections_total == 2


@pytest.mark.parametrize("data", [BODY, BIG_BODY], ids=["small", "8MB"])
async def test_a_disconnect_after_the_final_dot_is_unknown(
    server: SmtpTestServer, data: bytes
) -> None:
    """No reply to the final dot: the server may have the message (here it does), so the
    outcome is UNKNOWN, not DEFERRED, and the engine's policy decides. Also when the body
    was too big to hand to the kernel in one go and the dot left only after waiting."""
    server.drop_after_dot = 1
    async with transport(server) as smtp:
        outcome = await smtp.send(message(data=data))
        after = await smtp.send(message())
    assert outcome.status is DeliveryStatus.UNKNOWN
    assert outcome.code is None
    assert after.status is DeliveryStatus.SENT
    assert len(server.messages) == 2


@pytest.mark.parametrize("security", SECURITIES, ids=lambda s: s.value)
async def test_a_relay_hanging_up_before_the_final_dot_defers_the_message(
    tls: TlsFiles, security: SmtpSecurity
) -> None:
    """Issue 9: the relay hangs up (FIN, then RST for the data still coming) 1 MiB into
    an 8 MB body. The final dot never reached the kernel here, so the relay cannot have
    the message: DEFERRED without a code (it will be sent again), not UNKNOWN (it would
    not). The next send goes through on a new connection."""
    async with server_with(security, tls) as server:
        server.close_mid_data = 1
        server.mid_data_bytes = 1 << 20
        async with client_for(server, security, tls) as smtp:
            dropped = await smtp.send(message(data=BIG_BODY))
            after = await smtp.send(message())
    assert dropped.status is DeliveryStatus.DEFERRED, dropped
    assert dropped.code is None
    assert dropped.reply == "connection lost during DATA, before the final dot"
    assert after.status is DeliveryStatus.SENT
    assert [m.data for m in server.messages] == [BODY]
    assert server.connections_total == 2


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("552 5.3.4 Message too big", Outcome(DeliveryStatus.FAILED, 552, "5.3.4 Message too big")),
        ("421 4.3.2 Shutting down", Outcome(DeliveryStatus.DEFERRED, 421, "4.3.2 Shutting down")),
        (
            "250 2.0.0 OK",
            Outcome(DeliveryStatus.DEFERRED, None, "premature reply during DATA: 250 2.0.0 OK"),
        ),
    ],
)
async def test_a_reply_before_the_end_of_the_body_is_the_relays_verdict(
    server: SmtpTestServer, reply: str, expected: Outcome
) -> None:
    """A relay that answers in the middle of the body and hangs up: a refusal decides
    (552 5.3.4: FAILED, the message is too big, the mailbox is fine), not the hang-up; a
    "250" before the dot cannot be an acceptance: DEFERRED."""
    server.close_mid_data = 1
    server.mid_data_bytes = 1 << 20
    server.mid_data_reply = reply
    async with transport(server) as smtp:
        outcome = await smtp.send(message(data=BIG_BODY))
    assert outcome == expected
    assert server.messages == []


async def test_a_relay_that_stops_reading_the_body_times_out_and_defers(
    server: SmtpTestServer,
) -> None:
    """The relay stops reading 1 MiB into an 8 MB body and never answers: once nothing
    moves for the timeout, the send gives up. The dot never left: DEFERRED."""
    server.stall_mid_data = 1
    server.mid_data_bytes = 1 << 20
    async with transport(server, timeout=0.5) as smtp:
        outcome = await smtp.send(message(data=BIG_BODY))
    assert outcome.status is DeliveryStatus.DEFERRED
    assert outcome.code is None
    assert outcome.reply == "timed out during DATA, before the final dot"
    assert server.messages == []


@pytest.mark.parametrize("security", SECURITIES, ids=lambda s: s.value)
async def test_a_body_bigger_than_the_socket_buffers_is_delivered_exactly(
    tls: TlsFiles, security: SmtpSecurity
) -> None:
    """An 8 MB body must wait for the socket several times; its bytes arrive exactly and
    the relay's reply, which may come while the last wait ends, is not lost."""
    async with (
        server_with(security, tls) as server,
        client_for(server, security, tls) as smtp,
    ):
        outcomes = [await smtp.send(message(data=data)) for data in (BIG_BODY, BODY)]
    assert [o.status for o in outcomes] == [DeliveryStatus.SENT] * 2
    assert [m.data for m in server.messages] == [BIG_BODY, BODY]
    assert server.connections_total == 1


async def test_a_failing_on_body_callback_propagates_and_sends_no_body(
    server: SmtpTestServer,
) -> None:
    """The engine journals the body's departure in `on_body`; if that write fails (disk
    full), send() raises that very error, the relay receives no message, and the session,
    left in the middle of DATA, is not reused: the next send opens a fresh one."""
    calls: list[str] = []

    def journal_full() -> None:
        calls.append("on_body")
        raise OSError(errno.ENOSPC, "No space left on device")

    async with transport(server) as smtp:
        await smtp.send(message("first@example.org"))
        with pytest.raises(OSError, match="No space left") as caught:
            await smtp.send(message("second@example.org"), on_body=journal_full)
        after = await smtp.send(message("third@example.org"))
    assert caught.value.errno == errno.ENOSPC
    assert calls == ["on_body"]
    assert server.recipients == ["first@example.org", "third@example.org"]
    assert after.status is DeliveryStatus.SENT
    assert server.connections_total == 2
    assert server.commands["DATA"] == 3  # the 354 came; then nothing, not even the dot


async def test_a_slow_server_times_out_and_defers(server: SmtpTestServer) -> None:
    """No reply to RCPT within the timeout: DEFERRED (nothing was sent); the session is
    dropped and the next send opens a new one."""
    server.delays["RCPT"] = 2.0
    async with transport(server, timeout=0.2) as smtp:
        outcome = await smtp.send(message())
        server.delays.clear()
        after = await smtp.send(message())
    assert outcome.status is DeliveryStatus.DEFERRED
    assert outcome.code is None
    assert "timed out" in outcome.reply
    assert after.status is DeliveryStatus.SENT
    assert server.connections_total == 2


async def test_a_timeout_waiting_for_the_reply_to_the_dot_is_unknown(
    server: SmtpTestServer,
) -> None:
    """The whole message was sent but the reply never came in time: UNKNOWN."""
    server.delays["END"] = 2.0
    async with transport(server, timeout=0.2) as smtp:
        outcome = await smtp.send(message())
    assert outcome.status is DeliveryStatus.UNKNOWN


async def test_an_unreachable_relay_defers_without_a_code() -> None:
    """Connection refused: DEFERRED with code None (no server reply) and a reply starting
    "cannot connect", so the engine can tell a dead relay from a refusing one."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    smtp = SmtpTransport(host="127.0.0.1", port=port, security=SmtpSecurity.NONE, timeout=2)
    async with smtp:
        outcome = await smtp.send(message())
    assert outcome.status is DeliveryStatus.DEFERRED
    assert outcome.code is None
    assert outcome.reply.startswith(f"cannot connect to 127.0.0.1:{port}: ")
    assert cannot_connect(outcome)


async def test_a_relay_name_that_does_not_resolve_cannot_connect() -> None:
    """A host name with no address (RFC 6761 .invalid): "cannot connect", no code."""
    smtp = SmtpTransport(host="relay.invalid", port=25, security=SmtpSecurity.NONE, timeout=5)
    async with smtp:
        outcome = await smtp.send(message())
    assert outcome.reply.startswith("cannot connect to relay.invalid:25: ")
    assert cannot_connect(outcome)


async def test_a_relay_that_never_greets_cannot_connect() -> None:
    """The port accepts connections (the kernel completes them) but nothing ever says
    220: after the timeout, "cannot connect", like a relay that is down."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        smtp = SmtpTransport(host="127.0.0.1", port=port, security=SmtpSecurity.NONE, timeout=0.3)
        async with smtp:
            outcome = await smtp.send(message())
    assert outcome.status is DeliveryStatus.DEFERRED
    assert outcome.code is None
    assert cannot_connect(outcome), outcome.reply


async def test_a_busy_or_slow_relay_is_not_taken_for_a_dead_one(server: SmtpTestServer) -> None:
    """A relay that greets but then stops answering (EHLO here), or greets with 421, is
    up: DEFERRED, but `cannot_connect` is false, so the engine does not stop the send."""
    server.delays["EHLO"] = 2.0
    async with transport(server, timeout=0.2) as smtp:
        silent = await smtp.send(message())

    async def busy_relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"421 4.3.2 Too busy, try later\r\n")
        await writer.drain()
        writer.close()

    busy = await asyncio.start_server(busy_relay, "127.0.0.1", 0)
    async with busy:
        port = busy.sockets[0].getsockname()[1]
        smtp = SmtpTransport(host="127.0.0.1", port=port, security=SmtpSecurity.NONE, timeout=2)
        async with smtp:
            refused = await smtp.send(message())
    assert silent.status is DeliveryStatus.DEFERRED
    assert silent.code is None
    assert silent.reply.startswith(f"127.0.0.1:{server.port} stopped answering")
    assert not cannot_connect(silent)
    assert refused == Outcome(DeliveryStatus.DEFERRED, 421, "4.3.2 Too busy, try later")
    assert not cannot_connect(refused)


async def test_a_connection_closed_while_idle_is_replaced_transparently(
    server: SmtpTestServer,
) -> None:
    """Servers drop idle sessions; the next send reconnects and succeeds."""
    async with transport(server) as smtp:
        await smtp.send(message())
        server.drop_connections()
        await asyncio.sleep(0.05)
        outcome = await smtp.send(message())
    assert outcome.status is DeliveryStatus.SENT
    assert len(server.messages) == 2
    assert server.connections_total == 2


async def test_the_pool_never_opens_more_than_its_size(server: SmtpTestServer) -> None:
    """200 messages from 50 concurrent tasks over 4 connections: the server never sees
    more than 4 at once, the 4 are reused throughout, and every message arrives."""
    queue: asyncio.Queue[OutgoingMessage] = asyncio.Queue()
    for i in range(200):
        queue.put_nowait(message(f"r{i}@example.org"))
    outcomes: list[Outcome] = []

    async def worker(smtp: SmtpTransport) -> None:
        while not queue.empty():
            outcomes.append(await smtp.send(queue.get_nowait()))

    async with transport(server, connections=4) as smtp:
        await asyncio.gather(*(worker(smtp) for _ in range(50)))
    assert len(outcomes) == 200
    assert {o.status for o in outcomes} == {DeliveryStatus.SENT}
    assert sorted(server.recipients) == sorted(f"r{i}@example.org" for i in range(200))
    assert server.peak_connections == 4
    assert server.connections_total == 4


async def test_messages_per_connection_rotates_sessions(server: SmtpTestServer) -> None:
    """With a cap of 3, ten messages use four sessions, each ended with QUIT."""
    async with transport(server, messages_per_connection=3) as smtp:
        for i in range(10):
            await smtp.send(message(f"r{i}@example.org"))
    assert server.connections_total == 4
    assert server.peak_connections == 1
    assert server.commands["QUIT"] == 4


async def test_login_with_the_right_password_sends(tmp_path: Path) -> None:
    """AUTH with good credentials: the server records the login and accepts the mail."""
    async with (
        SmtpTestServer(auth=("mailer", "s3cret")) as server,
        transport(server, username="mailer", password="s3cret") as smtp,
    ):
        outcome = await smtp.send(message())
    assert outcome.status is DeliveryStatus.SENT
    assert server.logins == ["mailer"]


async def test_a_rejected_login_raises_transport_error() -> None:
    """535 to AUTH will not fix itself: TransportError(code=535) with a hint, nothing sent."""
    async with (
        SmtpTestServer(auth=("mailer", "s3cret")) as server,
        transport(server, username="mailer", password="wrong") as smtp,
    ):
        with pytest.raises(TransportError) as caught:
            await smtp.send(message())
    assert caught.value.code == 535
    assert "MAILER_SMTP_PASSWORD" in (caught.value.hint or "")
    assert server.messages == []


@pytest.mark.parametrize("where", ["MAIL", "RCPT"])
async def test_a_relay_asking_for_a_login_raises_transport_error(where: str) -> None:
    """530 (authentication required) at MAIL or RCPT is true of every message: it raises
    TransportError(code=530) telling the organiser to configure a login."""
    async with SmtpTestServer(auth=("mailer", "s3cret") if where == "MAIL" else None) as server:
        server.rcpt_replies["ada@example.org"] = "530 5.7.0 Authentication required"
        async with transport(server) as smtp:
            with pytest.raises(TransportError) as caught:
                await smtp.send(message())
    assert caught.value.code == 530
    assert "MAILER_SMTP_USERNAME" in (caught.value.hint or "")


async def test_starttls_with_a_trusted_ca_and_auth(tls: TlsFiles) -> None:
    """STARTTLS verified against the trustme CA (the server refuses mail without TLS),
    then AUTH over the encrypted session."""
    options: dict[str, Any] = {"tls": tls, "require_starttls": True, "auth": ("u", "p")}
    async with SmtpTestServer(**options) as server:
        smtp = transport(server, security=SmtpSecurity.STARTTLS, ca_file=tls.ca_file, username="u")
        smtp_with_password = transport(
            server,
            security=SmtpSecurity.STARTTLS,
            ca_file=tls.ca_file,
            username="u",
            password="p",
        )
        async with smtp, smtp_with_password:
            with pytest.raises(TransportError):
                await smtp.send(message())  # empty password: refused
            outcome = await smtp_with_password.send(message())
    assert outcome.status is DeliveryStatus.SENT
    assert server.logins == ["u"]


async def test_implicit_tls_with_a_trusted_ca(tls: TlsFiles) -> None:
    """security=tls speaks TLS from the first byte and verifies the certificate."""
    async with (
        SmtpTestServer(tls=tls, implicit_tls=True) as server,
        transport(server, security=SmtpSecurity.TLS, ca_file=tls.ca_file) as smtp,
    ):
        outcome = await smtp.send(message())
    assert outcome.status is DeliveryStatus.SENT
    assert len(server.messages) == 1


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "tls"])
async def test_a_certificate_from_an_unknown_ca_is_refused(
    tls: TlsFiles, tmp_path: Path, implicit: bool
) -> None:
    """A server certificate signed by a CA we do not trust: TransportError, nothing sent."""
    other_ca = TlsFiles.create(tmp_path).ca_file
    security = SmtpSecurity.TLS if implicit else SmtpSecurity.STARTTLS
    async with (
        SmtpTestServer(tls=tls, implicit_tls=implicit) as server,
        transport(server, security=security, ca_file=other_ca) as smtp,
    ):
        with pytest.raises(TransportError, match="TLS") as caught:
            await smtp.send(message())
    assert "MAILER_SMTP_CA_FILE" in (caught.value.hint or "")
    assert server.messages == []


async def test_starttls_required_but_not_offered_raises(server: SmtpTestServer) -> None:
    """Asking for STARTTLS from a server that does not offer it never falls back to plain."""
    async with transport(server, security=SmtpSecurity.STARTTLS) as smtp:
        with pytest.raises(TransportError):
            await smtp.send(message())
    assert server.messages == []


async def test_an_internationalised_address_uses_smtputf8(server: SmtpTestServer) -> None:
    """A non-ASCII local part goes out with SMTPUTF8 when the server offers it."""
    async with transport(server) as smtp:
        outcome = await smtp.send(message("zoë@example.org"))
    assert outcome.status is DeliveryStatus.SENT
    assert server.recipients == ["zoë@example.org"]


async def test_a_closed_transport_refuses_to_send(server: SmtpTestServer) -> None:
    """After aclose() (which QUITs idle sessions) send raises TransportError."""
    smtp = transport(server)
    await smtp.send(message())
    await smtp.aclose()
    assert server.commands["QUIT"] == 1
    with pytest.raises(TransportError):
        await smtp.send(message())


def test_from_settings_maps_every_smtp_setting(tmp_path: Path, tls: TlsFiles) -> None:
    """Settings fields reach the transport (password unwrapped from SecretStr)."""
    settings = Settings(
        smtp_host="relay.example.org",
        smtp_port=587,
        smtp_security=SmtpSecurity.STARTTLS,
        smtp_username="u",
        smtp_password="p",
        smtp_ca_file=tls.ca_file,
        concurrency=7,
        messages_per_connection=50,
    )
    smtp = SmtpTransport.from_settings(settings)
    assert (smtp.host, smtp.port, smtp.security) == ("relay.example.org", 587, "starttls")
    assert (smtp.connections, smtp.messages_per_connection) == (7, 50)


def test_the_harness_runs_in_a_thread_for_synchronous_callers() -> None:
    """`with SmtpTestServer()` serves from a background thread while the caller blocks."""

    async def send(port: int) -> Outcome:
        smtp = SmtpTransport(host="127.0.0.1", port=port, security=SmtpSecurity.NONE)
        async with smtp:
            return await smtp.send(message())

    with SmtpTestServer() as server:
        outcome = asyncio.run(send(server.port))
    assert outcome.status is DeliveryStatus.SENT
    assert len(server.messages) == 1


async def test_the_harness_runs_as_a_process_recording_to_files(tmp_path: Path) -> None:
    """`python tests/smtp_server.py --port-file --record-dir` records each message to disk."""
    with SmtpServerProcess(tmp_path / "received") as process:
        smtp = SmtpTransport(host="127.0.0.1", port=process.port, security=SmtpSecurity.NONE)
        async with smtp:
            await smtp.send(message("one@example.org"))
            await smtp.send(message("two@example.org"))
        received = process.messages
    assert [r.rcpt_tos for r in received] == [["one@example.org"], ["two@example.org"]]
    assert received[0].data == BODY


async def test_memory_transport_records_and_returns_the_outcomes_it_is_given() -> None:
    """MemoryTransport records every message, answers per recipient, and can raise."""
    bounce = Outcome(DeliveryStatus.BOUNCED, 550, "5.1.1 No such user")
    fake = MemoryTransport(
        {"gone@example.org": bounce, "down@example.org": TransportError("relay down")}
    )
    assert (await fake.send(message())).status is DeliveryStatus.SENT
    assert await fake.send(message("gone@example.org")) == bounce
    with pytest.raises(TransportError):
        await fake.send(message("down@example.org"))
    assert [m.recipient for m in fake.messages] == ["ada@example.org", "gone@example.org"]
    assert [m.recipient for m in fake.sent] == ["ada@example.org"]
    await fake.aclose()
    with pytest.raises(TransportError):
        await fake.send(message())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"x."]), max_size=30))
def test_dot_stuffing_fast_path_matches_the_general_one(parts: list[bytes]) -> None:
    """Whatever the body, the DATA payload is CRLF-only, dot-stuffed and ends in CRLF.CRLF,
    exactly as the general (regex) form gives it."""
    import re

    from mailer.delivery.smtp import _END_OF_DATA, _dot_stuff

    data = b"".join(parts)
    body = re.sub(rb"\r\n|\n|\r", b"\r\n", data)
    body = body if body.endswith(b"\r\n") else body + b"\r\n"
    expected = re.sub(rb"(?m)^\.", b"..", body) + b".\r\n"
    assert _dot_stuff(data) + _END_OF_DATA == expected


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.emails(), st.text(max_size=40)))
def test_addresses_go_on_the_line_as_aiosmtplibs_parser_puts_them(address: str) -> None:
    """The fast path for plain addresses gives what aiosmtplib's quote_address gives, and
    refuses (ValueError) whatever it refuses."""
    from aiosmtplib.email import quote_address

    from mailer.delivery.smtp import _path

    try:
        expected: str | None = quote_address(address)
    except ValueError:
        expected = None
    try:
        got: str | None = _path(address)
    except ValueError:
        got = None
    assert got == expected
