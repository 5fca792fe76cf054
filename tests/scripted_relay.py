"""A scripted SMTP relay on port 0, for what aiosmtpd cannot show or do.

aiosmtpd (tests/smtp_server.py) answers like a well-behaved relay. This one records
every read as it arrived (to see how the client's commands were grouped) and every
command line, answers from a script (out of turn, split into pieces, garbled, a 354
after a refusal), can speak STARTTLS or implicit TLS, hold its reading after the 354, or
half-close there. The `start_relay` fixture (registered in conftest.py) starts one and an
SmtpTransport for it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from mailer.config import SmtpSecurity
from mailer.delivery.smtp import SmtpTransport
from smtp_server import TlsFiles

Answer = Callable[[bytes], bytes | None]  # a command line -> its reply (None: say nothing)


def polite(line: bytes) -> bytes | None:
    verb = line[:4].upper()
    if verb == b"DATA":
        return b"354 go ahead\r\n"
    if verb == b"QUIT":
        return b"221 bye\r\n"
    return b"250 2.0.0 ok\r\n"


@dataclass
class Connection:
    lines: list[bytes] = field(default_factory=list)  # every command line read
    segments: list[bytes] = field(default_factory=list)  # every read, as it arrived
    writer: asyncio.StreamWriter | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Relay:
    pipelining: bool = True
    # The mechanisms offered in EHLO's AUTH line (b"PLAIN LOGIN"); `answer` answers them.
    auth: bytes | None = None
    security: SmtpSecurity = SmtpSecurity.NONE
    tls: ssl.SSLContext | None = None
    answer: Answer = polite
    end_reply: bytes = b"250 2.0.0 queued\r\n"
    # Replies to the final dots, message by message across connections, before end_reply
    # takes over; None: hang up instead of answering (the relay has the message).
    end_replies: list[bytes | None] = field(default_factory=list)
    # Set: answer no final dot until this event is set.
    hold_end_reply: asyncio.Event | None = None
    # The greeting of every connection after the first (a 4xx or 5xx one, then hang up).
    later_greeting: bytes | None = None
    # The greeting of the first connection (a 4xx one, then hang up).
    first_greeting: bytes | None = None
    # Set: connections after the first are greeted only once this event is set.
    greet_later: asyncio.Event | None = None
    # Set: after the 354, read nothing more until this event is set.
    hold_after_354: asyncio.Event | None = None
    # Half-close (FIN) right after the 354, and still read the body to its end.
    eof_after_354: bool = False
    # Split (or not) each reply into the writes it goes out in.
    chunks: Callable[[bytes], list[bytes]] = lambda data: [data]
    connections: list[Connection] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)  # bodies answered with a 250
    unanswered: list[bytes] = field(default_factory=list)  # bodies it hung up after
    seen: asyncio.Event = field(default_factory=asyncio.Event)  # set on each command line
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set on each read

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(writer=writer)
        self.connections.append(conn)
        pending = bytearray()
        in_data = False
        tls_on = self.security is SmtpSecurity.TLS
        try:
            greeting = b"220 scripted ESMTP\r\n"
            if self.later_greeting is not None and len(self.connections) > 1:
                greeting = self.later_greeting
            if self.first_greeting is not None and len(self.connections) == 1:
                greeting = self.first_greeting
            if self.greet_later is not None and len(self.connections) > 1:
                await self.greet_later.wait()
            await self.send(writer, greeting)
            if not greeting.startswith(b"220"):
                return  # busy or refusing: hang up
            while chunk := await reader.read(65536):
                conn.segments.append(chunk)
                self.arrived.set()
                pending += chunk
                while True:
                    if in_data:
                        end = pending.find(b"\r\n.\r\n")
                        if end < 0:
                            break
                        body = bytes(pending[2 : end + 2])
                        del pending[: end + 5]
                        in_data = False
                        if self.hold_end_reply is not None:
                            await self.hold_end_reply.wait()
                        verdict = self.end_replies.pop(0) if self.end_replies else self.end_reply
                        if verdict is None:
                            self.unanswered.append(body)
                            return
                        if verdict.startswith(b"250"):
                            self.messages.append(body)
                        await self.send(writer, verdict)
                        continue
                    eol = pending.find(b"\r\n")
                    if eol < 0:
                        break
                    line = bytes(pending[:eol])
                    conn.lines.append(line)
                    self.seen.set()
                    verb = line[:4].upper()
                    if verb in (b"EHLO", b"HELO"):
                        del pending[: eol + 2]
                        offers = b"250-PIPELINING\r\n" if self.pipelining else b""
                        if self.auth is not None:
                            offers += b"250-AUTH " + self.auth + b"\r\n"
                        if self.security is SmtpSecurity.STARTTLS and not tls_on:
                            offers += b"250-STARTTLS\r\n"
                        await self.send(
                            writer, b"250-scripted\r\n" + offers + b"250 SIZE 1000000000\r\n"
                        )
                        continue
                    if line.upper() == b"STARTTLS":
                        del pending[: eol + 2]
                        await self.send(writer, b"220 go ahead\r\n")
                        assert self.tls is not None
                        await writer.start_tls(self.tls)
                        tls_on = True
                        continue
                    reply = self.answer(line)
                    in_data = reply is not None and reply.startswith(b"354")
                    # The CRLF ending the DATA line is kept: the end is always CRLF.CRLF.
                    del pending[: eol if in_data else eol + 2]
                    if reply is not None:
                        await self.send(writer, reply)
                    if in_data and self.eof_after_354:
                        writer.write_eof()  # FIN: we say no more, but go on reading
                    if in_data and self.hold_after_354 is not None:
                        await self.hold_after_354.wait()
                    if line.upper() == b"QUIT":
                        return
        except (ConnectionError, ssl.SSLError):
            pass  # the client went away
        finally:
            writer.close()
            conn.ended.set()

    async def send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        pieces = self.chunks(data)
        for index, piece in enumerate(pieces):
            writer.write(piece)
            await writer.drain()
            if index + 1 < len(pieces):
                for _ in range(3):  # a turn of the client's loop between the pieces
                    await asyncio.sleep(0)


Start = Callable[..., Awaitable[tuple[Relay, SmtpTransport]]]


@pytest.fixture
async def start_relay(tls_files: TlsFiles) -> AsyncIterator[Start]:
    """Start a Relay on port 0 and an SmtpTransport for it (closed at the end)."""
    servers: list[asyncio.Server] = []
    clients: list[SmtpTransport] = []

    async def started(
        relay: Relay,
        *,
        reply_timeout: float = 5.0,
        connections: int = 1,
        messages_per_connection: int | None = None,
    ) -> tuple[Relay, SmtpTransport]:
        if relay.security is not SmtpSecurity.NONE:
            relay.tls = tls_files.server_context
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small fixed receive buffer (inherited by accepted sockets): a relay that
        # stops reading backs the client up after a few hundred KB, not tens of MB.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        listener.bind(("127.0.0.1", 0))
        server = await asyncio.start_server(
            relay.serve,
            sock=listener,
            ssl=relay.tls if relay.security is SmtpSecurity.TLS else None,
        )
        servers.append(server)
        client = SmtpTransport(
            host="127.0.0.1",
            port=listener.getsockname()[1],
            security=relay.security,
            ca_file=tls_files.ca_file if relay.security is not SmtpSecurity.NONE else None,
            timeout=reply_timeout,
            connections=connections,
            messages_per_connection=messages_per_connection,
            local_hostname="client.test",
        )
        clients.append(client)
        return relay, client

    yield started
    for client in clients:
        await client.aclose()
    for server in servers:
        server.close()
        await server.wait_closed()
