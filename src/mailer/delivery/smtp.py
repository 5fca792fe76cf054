"""SMTP delivery through aiosmtplib: a pool of reused sessions, one transaction per message.

aiosmtplib sends one message at a time per session, so the pool size is the concurrency.
What each reply means is decided in `smtp_replies`; this module only runs the dialogue:
MAIL FROM, RCPT TO, DATA, then the body, with RSET after any refusal so the session can be
reused, and QUIT when a session retires.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
from aiosmtplib import SMTPStatus

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
    transactions: int = 0


class SmtpTransport:
    """A pool of at most `connections` SMTP sessions; `send()` may be called from many tasks.

    Sessions are opened lazily, reused for many messages, replaced after a disconnect and,
    when `messages_per_connection` is set, closed with QUIT after that many transactions.
    `timeout` bounds each connect and each command, not a whole message.
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

        `on_body` is called right before the body is written, after the relay's 354."""
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
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self._username,
            password=self._password,
            local_hostname=self._local_hostname,
            timeout=self._timeout,
            use_tls=self.security is SmtpSecurity.TLS,
            # "none" means none: an opportunistic upgrade to an unverifiable certificate
            # would fail a session the operator asked to run in the clear.
            start_tls=self.security is SmtpSecurity.STARTTLS,
            tls_context=self._tls_context,
        )
        where = f"{self.host}:{self.port}"
        try:
            await smtp.connect()
            if smtp.is_ehlo_or_helo_needed:
                await smtp.ehlo()  # for SIZE / SMTPUTF8 / 8BITMIME before MAIL FROM
        except BaseException as exc:
            smtp.close()
            if isinstance(exc, Exception):
                raise session_failure(exc, where) from exc
            raise
        return _Connection(smtp)

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
        return await self._send_body(smtp, message.data)

    async def _send_body(self, smtp: aiosmtplib.SMTP, data: bytes) -> Outcome:
        # aiosmtplib's data() sends DATA and the body as one step, so a lost connection
        # cannot be placed before or after the final dot. We send DATA ourselves (above)
        # and the body here through the session's public protocol object.
        protocol, transport = smtp.protocol, smtp.transport
        if protocol is None or not isinstance(transport, asyncio.WriteTransport):
            smtp.close()
            return Outcome(DeliveryStatus.DEFERRED, None, "connection lost before DATA")
        try:
            protocol.write(_dot_stuff(data))
            reply = await protocol.read_response(timeout=self._timeout)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError) as exc:
            unsent = transport.get_write_buffer_size()
            smtp.close()
            if unsent or _was_reset(exc):
                # Bytes still queued here, or a TCP reset (the server closed with our data
                # unread): the final dot never reached the server, so it cannot have
                # accepted the message.
                return Outcome(DeliveryStatus.DEFERRED, None, f"{_describe(exc)} during DATA")
            return Outcome(
                DeliveryStatus.UNKNOWN,
                None,
                f"{_describe(exc)} after the end of DATA; the message may have been delivered",
            )
        except aiosmtplib.SMTPResponseException as exc:  # garbage where the reply should be
            smtp.close()
            return Outcome(DeliveryStatus.UNKNOWN, None, f"unreadable reply to DATA: {exc}")
        if reply.code == SMTPStatus.domain_unavailable:  # 421: the server is closing
            smtp.close()
        elif reply.code != SMTPStatus.completed:
            await _reset(smtp)
        return Outcome(classify_reply(reply.code, reply.message), reply.code, reply.message)


_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def _dot_stuff(data: bytes) -> bytes:
    """The DATA payload: CRLF line endings, leading dots doubled (RFC 5321 4.5.2), the dot."""
    crlf = data.count(b"\r\n")
    if (
        data.count(b"\n") == crlf
        and data.count(b"\r") == crlf
        and b"\n." not in data
        and not data.startswith(b".")
        and data.endswith(b"\r\n")
    ):
        # What our composer produces: already CRLF, no line starting with a dot. Three
        # C-speed scans instead of two regex substitutions: ~145 us a message here, the
        # largest per-message cost left in the sender (bench/bench_send.py profile).
        return data + b".\r\n"
    body = _LINE_ENDINGS.sub(b"\r\n", data)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return _LEADING_DOT.sub(b"..", body) + b".\r\n"


async def _reset(smtp: aiosmtplib.SMTP) -> None:
    """RSET after a refused transaction, so the session can carry the next message."""
    if not smtp.is_connected:
        return
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()  # a session that cannot reset is not reused


def _was_reset(exc: BaseException) -> bool:
    return isinstance(exc.__cause__, ConnectionResetError | BrokenPipeError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPTimeoutError):
        return "timed out"
    return "connection lost"
