"""A wrong password is tried once, not once per connection or per mechanism.

Relays lock an account after a few refused logins (Microsoft 365's smart lockout, fail2ban
on a small Postfix). Before this, a campaign of 20 with a wrong password made 16 refused
logins at aiosmtpd: 8 sessions (4 connections and 4 messages waiting behind them, each
opening its own after the last one failed), each trying PLAIN and then LOGIN, because
aiosmtplib's login() tries every mechanism offered. Now sessions open one at a time until
one has opened, those waiting share a refusal, and a mechanism is left for the next only
when the relay says it cannot be used (504, 534, 538), never on a refused password (535).
(The engine's side, end to end: test_dispatch's bad-credentials test.)
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable

import pytest

from mailer.config import SmtpSecurity
from mailer.delivery.smtp import SmtpTransport
from mailer.errors import TransportError
from mailer.models import DeliveryStatus, OutgoingMessage
from scripted_relay import Relay, Start, polite

pytestmark = pytest.mark.every_event_loop


def message(index: int) -> OutgoingMessage:
    return OutgoingMessage(
        "org@mailer.test", f"guest{index}@example.org", f"<{index}@mailer.test>", b"Hi\r\n"
    )


def logins(relay: Relay) -> list[bytes]:
    """Every AUTH command the relay read, on every connection."""
    return [line for conn in relay.connections for line in conn.lines if line.startswith(b"AUTH")]


def authenticating(plain: bytes, login_ok: bool) -> Relay:
    """A relay offering PLAIN and LOGIN: PLAIN answered with `plain`; LOGIN (the username
    with the command, as aiosmtplib sends it) asks for the password, then says 235 if
    `login_ok` else 535."""
    password_next = False

    def answer(line: bytes) -> bytes | None:
        nonlocal password_next
        if line.startswith(b"AUTH PLAIN"):
            return plain
        if line.startswith(b"AUTH LOGIN "):
            password_next = True
            return b"334 " + base64.b64encode(b"Password:") + b"\r\n"
        if password_next:
            password_next = False
            return b"235 2.7.0 ok\r\n" if login_ok else b"535 5.7.8 bad credentials\r\n"
        return polite(line)

    return Relay(auth=b"PLAIN LOGIN", answer=answer)


def client_of(
    plain: SmtpTransport,
    *,
    log_in: bool = True,
    connections: int = 4,
    clock: Callable[[], float] = time.monotonic,
    refusal_shared: float | None = None,
) -> SmtpTransport:
    """A transport to `plain`'s relay, logging in as org with a wrong password, or not."""
    return SmtpTransport(
        host=plain.host,
        port=plain.port,
        security=SmtpSecurity.NONE,
        username="org" if log_in else None,
        password="wrong" if log_in else None,
        connections=connections,
        local_hostname="client.test",
        clock=clock,
        refusal_shared=refusal_shared,
    )


async def test_a_refused_password_is_tried_once_for_all_waiting_sends(start: Start) -> None:
    """Eight sends at once over 4 connections to a relay refusing the password: one
    connection, one AUTH line; every send fails with the relay's refusal."""
    relay, plain = await start(authenticating(b"535 5.7.8 bad credentials\r\n", True))
    client = client_of(plain)
    try:
        results = await asyncio.gather(
            *(client.send(message(i)) for i in range(8)), return_exceptions=True
        )
    finally:
        await client.aclose()
    assert all(isinstance(r, TransportError) for r in results), results
    assert all("535" in str(r) for r in results)
    assert len(logins(relay)) == 1
    assert len(relay.connections) == 1


async def test_a_mechanism_the_relay_cannot_use_gives_way_to_the_next(start: Start) -> None:
    """PLAIN answered 504 (not implemented here): LOGIN is tried, and the message goes."""
    relay, plain = await start(authenticating(b"504 5.5.4 mechanism not available\r\n", True))
    client = client_of(plain)
    try:
        outcome = await client.send(message(0))
    finally:
        await client.aclose()
    assert outcome.status is DeliveryStatus.SENT
    assert [line.split()[1] for line in logins(relay)] == [b"PLAIN", b"LOGIN"]


async def test_once_a_session_has_opened_the_others_open_side_by_side(start: Start) -> None:
    """Four sends over 4 connections: the first session opens alone; then the other three
    connect together (the relay greets them only once all three are there)."""
    greet = asyncio.Event()
    relay, plain = await start(Relay(greet_later=greet))
    client_without_login = client_of(plain, log_in=False)
    try:
        sending = asyncio.gather(*(client_without_login.send(message(i)) for i in range(4)))
        async with asyncio.timeout(30):
            while len(relay.connections) < 4:  # noqa: ASYNC110 (the relay's own count)
                await asyncio.sleep(0.01)
        greet.set()
        outcomes = await sending
    finally:
        await client_without_login.aclose()
    assert [o.status for o in outcomes] == [DeliveryStatus.SENT] * 4


async def test_a_first_connection_that_fails_for_a_while_is_not_shared(start: Start) -> None:
    """The first connection is greeted 421 (busy): that message is deferred, and the
    others, waiting behind it, open their own sessions and go."""
    _, plain = await start(Relay(first_greeting=b"421 4.3.2 too busy\r\n"))
    client = client_of(plain, log_in=False)
    try:
        outcomes = await asyncio.gather(*(client.send(message(i)) for i in range(8)))
    finally:
        await client.aclose()
    statuses = [o.status for o in outcomes]
    assert statuses.count(DeliveryStatus.DEFERRED) == 1
    assert statuses.count(DeliveryStatus.SENT) == 7


async def test_a_busy_first_connection_does_not_open_the_way_to_many_logins(
    start: Start,
) -> None:
    """The first connection is greeted 421 and the password is wrong: the next waiting
    send opens first in turn and is refused, and that refusal is shared: one AUTH line
    for 20 sends over 16 connections (a review found 16 when a 421 let every waiting
    send log in side by side)."""
    relay = authenticating(b"535 5.7.8 bad credentials\r\n", True)
    relay.first_greeting = b"421 4.7.0 too many connections\r\n"
    relay, plain = await start(relay)
    client = client_of(plain, connections=16)
    try:
        results = await asyncio.gather(
            *(client.send(message(i)) for i in range(20)), return_exceptions=True
        )
    finally:
        await client.aclose()
    assert len(logins(relay)) == 1
    refused = [r for r in results if isinstance(r, TransportError)]
    assert len(refused) == 19  # the one greeted 421 was deferred, the rest refused


async def test_after_a_while_a_refused_relay_is_asked_again(start: Start) -> None:
    """A refusal answers the sends that come within seconds of it (the engine stops
    meanwhile); later (MAILER_RELAYS tries a relay again after its cooldown) the next send
    logs in anew."""
    now = [0.0]
    relay, plain = await start(authenticating(b"535 5.7.8 bad credentials\r\n", True))
    client = client_of(plain, clock=lambda: now[0])
    try:
        with pytest.raises(TransportError):
            await client.send(message(0))
        now[0] = 5.0
        with pytest.raises(TransportError):
            await client.send(message(1))
        assert len(logins(relay)) == 1
        now[0] = 11.0
        with pytest.raises(TransportError):
            await client.send(message(2))
        assert len(logins(relay)) == 2
    finally:
        await client.aclose()


async def test_a_shorter_sharing_lets_the_relay_be_asked_sooner(start: Start) -> None:
    """`refusal_shared` (MAILER_RELAYS sets it under the cooldown): after it, a send asks
    the relay again."""
    now = [0.0]
    relay, plain = await start(authenticating(b"535 5.7.8 bad credentials\r\n", True))
    client = client_of(plain, clock=lambda: now[0], refusal_shared=2.0)
    try:
        with pytest.raises(TransportError):
            await client.send(message(0))
        now[0] = 1.9
        with pytest.raises(TransportError):
            await client.send(message(1))
        assert len(logins(relay)) == 1
        now[0] = 2.0
        with pytest.raises(TransportError):
            await client.send(message(2))
        assert len(logins(relay)) == 2
    finally:
        await client.aclose()


@pytest.fixture
def start(start_relay: Start) -> Start:
    return start_relay
