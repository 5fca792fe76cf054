"""SMTP delivery through aiosmtplib: a pool of reused sessions, one transaction per message.

aiosmtplib sends one message at a time per session, so the pool size is the concurrency.
What each reply means is decided in `replies`; this module only runs the dialogue:
MAIL FROM, RCPT TO, DATA, then the body, with RSET after any refusal so the session can be
reused, and QUIT when a session retires.

A connection lost during DATA is DEFERRED or UNKNOWN depending on one fact: had the final
dot been handed to the kernel when it failed? Before that the relay cannot have accepted
the message, so it is safe to send again. aiosmtplib's `data()` writes DATA and the body
as one step, so we send DATA with `execute_command`, then write the body and the dot
ourselves and wait until the transport has handed them to the socket (`drain()`, with
low-water marks of zero so that it means *all* of it).
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
from aiosmtplib import SMTPResponse, SMTPStatus
from aiosmtplib.protocol import SMTPProtocol

from mailer.config import Settings, SmtpSecurity
from mailer.delivery.replies import (
    AUTH_REQUIRED,
    SessionDeferred,
    classify_reply,
    login_required,
    sender_refused,
    session_failure,
    tls_context,
)
from mailer.errors import TransportError
from mailer.models import DeliveryStatus, Outcome, OutgoingMessage

__all__ = ["SmtpTransport"]


class _Stale(Exception):
    """A pooled connection turned out to be closed by the server while idle."""


@dataclass(slots=True)
class _Connection:
    smtp: aiosmtplib.SMTP
    # Flow control over the session's transport. aiosmtplib's protocol implements the
    # contract asyncio.StreamWriter.drain() needs (its FlowControlMixin). Kept for the
    # session's life: a StreamWriter dropped while its transport is open closes it.
    writer: asyncio.StreamWriter
    # With STARTTLS, the socket's own transport under the TLS layer (None in the clear,
    # where the session's transport is the socket's, and under implicit TLS, where
    # asyncio does not expose it). The TLS layer hands it ciphertext at once; it is what
    # still holds bytes the kernel has not taken.
    below_tls: asyncio.WriteTransport | None
    in_clear: bool
    transactions: int = 0

    def write_failed(self) -> bool:
        """Checked right after a write: the kernel refused it (the connection is dead), so
        nothing of it is in the kernel although no buffer holds it either."""
        return self.writer.transport.is_closing() or (
            self.below_tls is not None and self.below_tls.is_closing()
        )

    def unsent(self) -> int:
        """Bytes written but not yet handed to the kernel (as far as can be seen)."""
        waiting = self.writer.transport.get_write_buffer_size()
        if self.below_tls is not None:
            waiting += self.below_tls.get_write_buffer_size()
        return waiting


class SmtpTransport:
    """A pool of at most `connections` SMTP sessions; `send()` may be called from many tasks.

    Sessions are opened lazily, reused for many messages, replaced after a disconnect and,
    when `messages_per_connection` is set, closed with QUIT after that many transactions.
    `timeout` bounds each connect and each command, not a whole message (but the body's
    transfer counts as one command: a body the socket takes slower than that is deferred).
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        security: SmtpSecurity,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        connections: int = 4,
        messages_per_connection: int | None = None,
        ca_file: Path | None = None,
        local_hostname: str | None = None,
    ) -> None:
        if connections < 1:
            raise ValueError("connections must be at least 1")
        if messages_per_connection is not None and messages_per_connection < 1:
            raise ValueError("messages_per_connection must be at least 1")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.host = host
        self.port = port
        self.security = security
        self.connections = connections
        self.messages_per_connection = messages_per_connection
        self._username = username
        self._password = password
        self._timeout = timeout
        self._local_hostname = local_hostname
        self._tls_context = tls_context(ca_file) if security is not SmtpSecurity.NONE else None
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[_Connection] = []
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpTransport:
        password = settings.smtp_password
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=password.get_secret_value() if password is not None else None,
            timeout=settings.smtp_timeout,
            connections=settings.concurrency,
            messages_per_connection=settings.messages_per_connection,
            ca_file=settings.smtp_ca_file,
        )

    async def __aenter__(self) -> SmtpTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def send(
        self, message: OutgoingMessage, *, on_body: Callable[[], None] | None = None
    ) -> Outcome:
        """Deliver one message; wait for a free connection first if all are busy.

        `on_body` is called right before the body is written, after the relay's 354. If it
        raises, nothing of the body is sent, the session (stuck in DATA) is closed rather
        than pooled, and the exception propagates."""
        if self._closed:
            raise TransportError("the SMTP transport is closed")
        async with self._slots:
            conn = self._checkout()
            try:
                if conn is None:
                    conn = await self._open()
                    return await self._transact(conn, message, on_body)
                try:
                    return await self._transact(conn, message, on_body)
                except _Stale:
                    # Servers drop idle sessions (often with an unsolicited 421); nothing of
                    # this message reached them, so one retry on a fresh session is safe.
                    conn.smtp.close()
                    conn = None
                    conn = await self._open()
                    return await self._transact(conn, message, on_body)
            except SessionDeferred as exc:
                return exc.outcome
            except BaseException:
                if conn is not None:
                    conn.smtp.close()  # cancelled or crashed mid-command: state unknown
                conn = None
                raise
            finally:
                if conn is not None:
                    await self._checkin(conn)

    async def aclose(self) -> None:
        """QUIT every idle session; sessions in use are closed when their send returns."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(conn) for conn in idle))

    # -- the pool ---------------------------------------------------------------------

    def _checkout(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.smtp.is_connected:
                return conn
            conn.smtp.close()
        return None

    async def _checkin(self, conn: _Connection) -> None:
        cap = self.messages_per_connection
        if not conn.smtp.is_connected:
            conn.smtp.close()
        elif self._closed or (cap is not None and conn.transactions >= cap):
            # QUIT before the slot is released, so the server never sees more than
            # `connections` sessions at once, even while one is being replaced.
            await self._quit(conn)
        else:
            self._idle.append(conn)

    async def _quit(self, conn: _Connection) -> None:
        try:
            await conn.smtp.quit()
        except (aiosmtplib.SMTPException, OSError):
            pass  # the server is gone or rude; the session is over either way
        finally:
            conn.smtp.close()

    async def _open(self) -> _Connection:
        if self._local_hostname is None:
            # aiosmtplib would look this up (DNS) on every connect; once is enough.
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        implicit_tls = self.security is SmtpSecurity.TLS
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            local_hostname=self._local_hostname,
            timeout=self._timeout,
            use_tls=implicit_tls,
            # STARTTLS and the login are done below, step by step, to reach the socket's
            # transport before TLS wraps it. "none" means none: an opportunistic upgrade
            # to an unverifiable certificate would fail a session asked to run in the clear.
            start_tls=False,
            tls_context=self._tls_context,
        )
        where = f"{self.host}:{self.port}"
        connected = False
        try:
            await smtp.connect()  # TCP, TLS for port 465, the greeting
            connected = True
            socket_transport = None if implicit_tls else smtp.transport
            if isinstance(socket_transport, asyncio.WriteTransport):
                # Pause (for drain()) at the first byte the kernel has not taken, resume
                # once it took them all. Under STARTTLS this also holds the TLS layer's
                # ciphertext back (where it can be seen) while the socket is busy.
                socket_transport.set_write_buffer_limits(high=0)
            if self.security is SmtpSecurity.STARTTLS:
                await smtp.starttls()
            if self._username is not None:
                await smtp.login(self._username, self._password or "")
            if smtp.is_ehlo_or_helo_needed:
                await smtp.ehlo()  # for SIZE / SMTPUTF8 / 8BITMIME before MAIL FROM
            transport, protocol = smtp.transport, smtp.protocol
            if not isinstance(transport, asyncio.WriteTransport) or protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("connection lost")
        except BaseException as exc:
            smtp.close()
            if isinstance(exc, Exception):
                raise session_failure(exc, where, connected=connected) from exc
            raise
        in_clear = self.security is SmtpSecurity.NONE
        below_tls = None
        if not in_clear:
            # The same for the TLS layer's buffer, but asyncio's TLS transport pauses at
            # `size >= high` (a socket's at `size > high`): high=0 would pause it even
            # when empty, and drain() would hang; 1 means "anything waiting" there.
            transport.set_write_buffer_limits(high=1, low=0)
            if isinstance(socket_transport, asyncio.WriteTransport):
                below_tls = socket_transport
        writer = asyncio.StreamWriter(transport, protocol, None, asyncio.get_running_loop())
        return _Connection(smtp, writer, below_tls, in_clear)

    # -- one transaction --------------------------------------------------------------

    async def _transact(
        self,
        conn: _Connection,
        message: OutgoingMessage,
        on_body: Callable[[], None] | None,
    ) -> Outcome:
        smtp = conn.smtp
        reused = conn.transactions > 0
        conn.transactions += 1
        addresses = (message.sender, message.recipient)
        utf8 = not all(address.isascii() for address in addresses)
        if utf8 and not smtp.supports_extension("smtputf8"):
            return Outcome(DeliveryStatus.FAILED, None, "relay does not support SMTPUTF8")
        options = []
        if smtp.supports_extension("size"):
            options.append(f"SIZE={len(message.data)}")
        if utf8:
            options.append("SMTPUTF8")
        if not message.data.isascii() and smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        encoding = "utf-8" if utf8 else "ascii"
        try:
            try:
                await smtp.mail(message.sender, options=options, encoding=encoding)
            except aiosmtplib.SMTPSenderRefused as exc:
                await _reset(smtp)
                if exc.code < 500:
                    return Outcome(DeliveryStatus.DEFERRED, exc.code, exc.message)
                if exc.code == AUTH_REQUIRED:
                    raise login_required(exc.code, exc.message) from exc
                # Every message of a campaign has the same sender (or needs the same
                # login), so this is the session's problem, not this recipient's: failing
                # messages one by one would finalise the whole list on a config error.
                raise sender_refused(exc, message.sender) from exc
            except aiosmtplib.SMTPServerDisconnected as exc:
                if reused:
                    raise _Stale from exc
                raise
            try:
                await smtp.rcpt(message.recipient, encoding=encoding)
            except aiosmtplib.SMTPRecipientRefused as exc:
                await _reset(smtp)
                if exc.code == AUTH_REQUIRED:  # some relays ask for the login only at RCPT
                    raise login_required(exc.code, exc.message) from exc
                return Outcome(classify_reply(exc.code, exc.message), exc.code, exc.message)
            start = await smtp.execute_command(b"DATA")
            if start.code != SMTPStatus.start_input:
                await _reset(smtp)
                return Outcome(classify_reply(start.code, start.message), start.code, start.message)
        except ValueError as exc:  # an address aiosmtplib refuses to put on the wire
            await _reset(smtp)
            return Outcome(DeliveryStatus.FAILED, None, f"invalid address: {exc}")
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError) as exc:
            return Outcome(DeliveryStatus.DEFERRED, None, f"{_describe(exc)} before DATA")
        if on_body is not None:
            on_body()
        return await self._send_body(conn, message.data)

    async def _send_body(self, conn: _Connection, data: bytes) -> Outcome:
        smtp = conn.smtp
        protocol = smtp.protocol
        if protocol is None or not smtp.is_connected:
            smtp.close()
            return Outcome(
                DeliveryStatus.DEFERRED, None, "connection lost during DATA, before the body"
            )
        body = _dot_stuff(data)
        # In the clear one write will do: drained, all of it is in the kernel. Under TLS
        # the dot goes in a write of its own once the body has been handed on, so that it
        # waits in the TLS layer (where it can be seen) while the socket is still busy.
        pieces = (body + _END_OF_DATA,) if conn.in_clear else (body, _END_OF_DATA)
        reading: asyncio.Future[SMTPResponse] | None = None
        try:
            try:
                for piece in pieces:
                    if reading is not None and reading.done():
                        # The server answered or hung up before the end of the data.
                        return _before_the_dot(smtp, await _stop_reading(reading), None)
                    protocol.write(piece)
                    if conn.write_failed():
                        return _before_the_dot(smtp, await _stop_reading(reading), None)
                    if conn.unsent():
                        if reading is None:
                            # Waiting yields to the loop, and aiosmtplib drops what
                            # arrives while no read is pending: keep one pending from
                            # here on, so that neither an early reply nor the final one
                            # is lost.
                            reading = _start_reading(protocol)
                        await asyncio.wait_for(conn.writer.drain(), self._timeout)
            except OSError as exc:  # lost or stalled (timeout) with the dot still here
                return _before_the_dot(smtp, await _stop_reading(reading), exc)
            # From here on the relay may have the whole message.
            if reading is None:  # the usual case: the kernel took it all at once
                return await self._final_reply(conn, protocol.read_response(self._timeout))
            # A refusal read while we waited may have come before the end of the data, and
            # the server may answer the dot as well: such a session is not reused.
            reply = asyncio.wait_for(reading, self._timeout)
            return await self._final_reply(conn, reply, reset_after_refusal=False)
        finally:
            if reading is not None and not reading.done():
                reading.cancel()  # cancelled send: the session is closed by send()

    async def _final_reply(
        self,
        conn: _Connection,
        reply_coro: Awaitable[SMTPResponse],
        *,
        reset_after_refusal: bool = True,
    ) -> Outcome:
        """The relay's reply once the final dot is in the kernel's hands."""
        smtp = conn.smtp
        try:
            reply = await reply_coro
        except (aiosmtplib.SMTPServerDisconnected, TimeoutError) as exc:
            # A timeout leaves the transports open: a dot still queued there never left.
            unsent = conn.unsent() if smtp.is_connected else 0
            smtp.close()
            if unsent:
                return Outcome(DeliveryStatus.DEFERRED, None, f"{_describe(exc)} during DATA")
            return Outcome(
                DeliveryStatus.UNKNOWN,
                None,
                f"{_describe(exc)} after the end of DATA; the message may have been delivered",
            )
        except aiosmtplib.SMTPResponseException as exc:  # garbage where the reply should be
            smtp.close()
            return Outcome(DeliveryStatus.UNKNOWN, None, f"unreadable reply to DATA: {exc}")
        if reply.code == SMTPStatus.completed:
            pass
        elif reply.code == SMTPStatus.domain_unavailable or not reset_after_refusal:
            smtp.close()  # 421: the server is closing (or see reset_after_refusal above)
        else:
            await _reset(smtp)
        return Outcome(classify_reply(reply.code, reply.message), reply.code, reply.message)


_END_OF_DATA = b".\r\n"


def _start_reading(protocol: SMTPProtocol) -> asyncio.Future[SMTPResponse]:
    reading = asyncio.ensure_future(protocol.read_response())
    reading.add_done_callback(_retrieve)  # a hang-up nobody awaits is not an error to log
    return reading


def _retrieve(reading: asyncio.Future[SMTPResponse]) -> None:
    if not reading.cancelled():
        reading.exception()


async def _stop_reading(reading: asyncio.Future[SMTPResponse] | None) -> SMTPResponse | None:
    """The reply that came before the end of the data, if one did; the read is cancelled."""
    if reading is None:
        return None
    if not reading.done():
        reading.cancel()
        await asyncio.wait([reading])
    if reading.cancelled() or reading.exception() is not None:
        return None
    return reading.result()


def _before_the_dot(
    smtp: aiosmtplib.SMTP, early: SMTPResponse | None, exc: BaseException | None
) -> Outcome:
    """The connection failed, stalled, or the server spoke, before the final dot was in
    the kernel: the relay cannot have accepted the message. The session is in the middle
    of DATA and cannot be reused."""
    smtp.close()
    if early is not None and early.code >= 400:  # e.g. 421 or 552 before the end of data
        return Outcome(classify_reply(early.code, early.message), early.code, early.message)
    if early is not None:
        reason = f"premature reply during DATA: {early.code} {early.message}"
        return Outcome(DeliveryStatus.DEFERRED, None, reason)
    described = _describe(exc) if exc is not None else "connection lost"
    return Outcome(DeliveryStatus.DEFERRED, None, f"{described} during DATA, before the final dot")


_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def _dot_stuff(data: bytes) -> bytes:
    """The DATA payload before the final dot: CRLF line endings, ending in CRLF, leading
    dots doubled (RFC 5321 4.5.2)."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") == crlf and data.count(b"\r") == crlf and data.endswith(b"\r\n"):
        # What our composer produces: already CRLF. C-speed scans and one `replace`
        # instead of two regex substitutions. Dots do occur at line starts in our own
        # messages: quoted-printable soft breaks land before the "." of a long link
        # ("https://mailer=\r\n.example.org/r/..."); the regex path cost ~250 us a
        # message here, a third of the sender's time (bench/README.md, sending).
        if data.startswith(b"."):
            data = b"." + data
        return data.replace(b"\r\n.", b"\r\n..") if b"\n." in data else data
    body = _LINE_ENDINGS.sub(b"\r\n", data)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return _LEADING_DOT.sub(b"..", body)


async def _reset(smtp: aiosmtplib.SMTP) -> None:
    """RSET after a refused transaction, so the session can carry the next message."""
    if not smtp.is_connected:
        return
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()  # a session that cannot reset is not reused


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return "connection lost"
