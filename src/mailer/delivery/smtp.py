"""SMTP delivery: a pool of reused sessions, one transaction per message, pipelined.

aiosmtplib opens each session (TCP, implicit TLS or STARTTLS, AUTH, EHLO); the messages
then go through our own `Session` protocol, which keeps every reply the server sends, so
that where the relay offers PIPELINING (RFC 2920) MAIL FROM, RCPT TO and DATA leave in
one write and their three replies come back together: two round trips a message instead
of four. When the next message is ready, its envelope even follows the last message's
final dot (`_take_next`): one write and about one round trip a message. A relay that
does not offer PIPELINING gets one command at a time, as before. A session carries one
message's body at a time, so the pool size is the concurrency (at most that many
messages can be with the relay). What each reply means is decided in `replies`; this
module runs the dialogue, with RSET after a refusal so the session can be reused, and
QUIT when a session retires.

A connection lost during DATA is DEFERRED or UNKNOWN depending on one fact: had the final
dot been handed to the kernel when it failed? Before that the relay cannot have accepted
the message, so it is safe to send again. So the body and the dot are written and then
drained until the transport has handed them to the socket (low-water marks of zero, so
that it means *all* of it; with a next envelope behind the dot, all but that envelope).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import aiosmtplib
from aiosmtplib import SMTPResponse, SMTPStatus
from aiosmtplib.email import quote_address

from mailer.config import Settings, SmtpSecurity
from mailer.delivery.replies import (
    AUTH_REQUIRED,
    SessionDeferred,
    cannot_connect,
    classify_reply,
    is_size_refusal,
    login_required,
    message_too_big,
    sender_refused,
    session_failure,
    tls_context,
)
from mailer.delivery.session import ConnectionLost, MalformedReply, Session
from mailer.errors import TransportError
from mailer.models import DeliveryStatus, Outcome, OutgoingMessage

__all__ = ["SmtpTransport", "log_in"]


class _Stale(Exception):
    """A pooled connection turned out to be closed by the server while idle."""


@dataclass(slots=True, eq=False)
class _Waiter:
    """A send() waiting for a session: all `connections` are in use."""

    message: OutgoingMessage
    handed: asyncio.Future[_Handoff]
    written: int = 0  # commands of its envelope written after another message's dot


@dataclass(frozen=True, slots=True)
class _Handoff:
    """What a waiting send() is given: a slot, with a session or none (open one), and how
    many of its envelope's commands were already written there (their replies unread)."""

    conn: _Connection | None
    written: int = 0


@dataclass(slots=True)
class _Connection:
    session: Session
    # With STARTTLS, the socket's own transport under the TLS layer (None in the clear,
    # where the session's transport is the socket's, and under implicit TLS, where
    # asyncio does not expose it). The TLS layer hands it ciphertext at once; it is what
    # still holds bytes the kernel has not taken.
    below_tls: asyncio.WriteTransport | None
    in_clear: bool
    # What the relay offered in its EHLO reply.
    # The standard library's selector loop in the clear: its socket transport reports
    # flow control after every partial send, so a drain to a low-water mark shows the
    # moment the bytes before it have all reached the kernel (see Session.drain).
    exact_flow: bool
    pipelining: bool
    size: bool
    smtputf8: bool
    eight_bit_mime: bool
    transactions: int = 0
    # In a transaction that has yet to write its body, where the next message's envelope
    # could follow the final dot (SmtpTransport._doors).
    door: bool = False
    # A message waiting for a session whose MAIL, RCPT and DATA already followed this
    # session's last final dot (RFC 2920): it takes this session over when the reply to
    # that dot has been read (SmtpTransport._release).
    next: _Waiter | None = None

    def write_failed(self) -> bool:
        """Checked right after a write: the kernel refused it (the connection is dead), so
        nothing of it is in the kernel although no buffer holds it either."""
        return self.session.transport.is_closing() or (
            self.below_tls is not None and self.below_tls.is_closing()
        )

    def unsent(self) -> int:
        """Bytes written but not yet handed to the kernel (as far as can be seen)."""
        waiting = self.session.unsent()
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
        clock: Callable[[], float] = time.monotonic,
        refusal_shared: float | None = None,
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
        # Shorter than REFUSAL_SHARED where a relay is tried again sooner (MAILER_RELAYS
        # with a short cooldown): else that try would meet the old refusal, not the relay.
        self.refusal_shared = REFUSAL_SHARED if refusal_shared is None else refusal_shared
        self._tls_context = tls_context(ca_file) if security is not SmtpSecurity.NONE else None
        self._in_use = 0  # slots taken: sessions in use or being opened
        # Sessions whose current message has yet to write its body and whose final dot a
        # waiting message's envelope could follow. A send() waits for one of them rather
        # than take an idle session while there are more of them than waiting sends:
        # when the sender, not the relay, sets the pace (the CPU building each message),
        # a message otherwise never finds anybody waiting to follow its dot.
        self._doors = 0
        self._waiting: deque[_Waiter] = deque()
        self._idle: list[_Connection] = []
        self._closed = False
        # Until a session has opened (and again after a refused one), the first opens
        # alone and the others wait for it; a refusal (a wrong password, a bad
        # certificate) is shared with the sends that were waiting and with those that come
        # within seconds. A wrong password is then tried once, not once per connection (16
        # refused logins for a campaign of 20 before), which relays that lock an account
        # after a few would.
        self._clock = clock
        self._vouched = False  # sessions may open side by side
        self._opening: asyncio.Future[None] | None = None  # the first open, under way
        # The last first open's failure, if it is one to share: a refusal, or no
        # connection at all (nothing listening, no answer: the same for every send).
        self._failure: Exception | None = None
        self._failures = 0
        self._refused_at = -math.inf

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
        than pooled, and the exception propagates.

        A send that waits for a session may be given one whose last message's final dot
        its envelope already followed (one write fewer, one wake-up fewer a message on
        each side; see `_send_body`)."""
        if self._closed:
            raise TransportError("the SMTP transport is closed")
        arrived = self._failures  # shared failures before this send came
        handoff = await self._acquire(message)
        conn = handoff.conn
        try:
            if conn is None:
                conn = self._checkout()
            if conn is None:
                conn = await self._open_session(arrived)
                return await self._transact(conn, message, on_body)
            try:
                return await self._transact(conn, message, on_body, written=handoff.written)
            except _Stale:
                # Servers drop idle sessions (often with an unsolicited 421); nothing of
                # this message reached them, so one retry on a fresh session is safe.
                conn.session.close()
                conn = None
                conn = await self._open_session(arrived)
                return await self._transact(conn, message, on_body)
        except SessionDeferred as exc:
            return exc.outcome
        except BaseException:
            if conn is not None:
                conn.session.close()  # cancelled or crashed mid-command: state unknown
            raise
        finally:
            await self._release(conn)

    async def aclose(self) -> None:
        """QUIT every idle session; sessions in use are closed when their send returns."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(conn) for conn in idle))

    # -- the pool ---------------------------------------------------------------------

    async def _acquire(self, message: OutgoingMessage) -> _Handoff:
        """A slot: at once while fewer than `connections` are in use, else in turn."""
        if self._in_use < self.connections and len(self._waiting) >= self._doors:
            self._in_use += 1
            return _Handoff(None)
        waiter = _Waiter(message, asyncio.get_running_loop().create_future())
        self._waiting.append(waiter)
        try:
            return await waiter.handed
        except asyncio.CancelledError:
            if waiter.handed.done() and not waiter.handed.cancelled():
                # Handed a slot as the cancel came: give it on (a session with this
                # message's envelope on it cannot carry another one).
                handed = waiter.handed.result()
                if handed.conn is not None and handed.written:
                    handed.conn.session.close()
                await self._release(handed.conn)
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(waiter)
            raise

    async def _release(self, conn: _Connection | None) -> None:
        """Give the slot (and the session, if it can go on) to the next waiting send(), or
        back to the pool."""
        if conn is not None and conn.next is not None:
            waiter, conn.next = conn.next, None
            if not waiter.handed.done() and conn.session.in_step(owed=waiter.written):
                waiter.handed.set_result(_Handoff(conn, written=waiter.written))
                return
            # Its sender was cancelled, or the session failed under the last message (lost,
            # closed after a 421): nothing of this message's body left, so it starts again
            # on a fresh session.
            conn.session.close()
            conn = None
            if not waiter.handed.done():
                waiter.handed.set_result(_Handoff(None))
                return
        kept = None
        try:
            if conn is not None:
                kept = await self._retire_or_keep(conn)
        finally:  # even when cancelled during QUIT: the slot goes on
            self._pass_slot(kept)

    def _pass_slot(self, conn: _Connection | None) -> None:
        waiter = self._first_waiter()
        if waiter is not None:
            waiter.handed.set_result(_Handoff(conn))
            return
        self._in_use -= 1
        if conn is not None:
            self._idle.append(conn)

    def _first_waiter(self) -> _Waiter | None:
        """The longest-waiting send() not cancelled meanwhile, taken off the queue."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.handed.done():
                return waiter
        return None

    def _checkout(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.session.usable:
                return conn
            conn.session.close()  # closed, or spoke out of turn (a 421 while idle)
        return None

    async def _retire_or_keep(self, conn: _Connection) -> _Connection | None:
        """The session, if it can carry another message; else closed (QUIT if it can)."""
        cap = self.messages_per_connection
        if not conn.session.usable:
            conn.session.close()
            return None
        if self._closed or (cap is not None and conn.transactions >= cap):
            # QUIT before the slot is released, so the server never sees more than
            # `connections` sessions at once, even while one is being replaced.
            await self._quit(conn)
            return None
        return conn

    async def _quit(self, conn: _Connection) -> None:
        session = conn.session
        try:
            if session.usable:
                session.write(b"QUIT\r\n", replies=1)
                await session.reply()
        except (ConnectionLost, MalformedReply, OSError):
            pass  # the server is gone or rude; the session is over either way
        finally:
            session.close()

    async def _open_session(self, arrived: int) -> _Connection:
        """A new session: side by side once one has opened, else after the first open
        (see __init__). A send that was waiting (for a slot or for the first open) when
        the first open was refused or could not connect at all fails the same way at
        once, and so does one that comes within `refusal_shared` seconds of a refusal:
        it would meet the same relay, password and certificate. After any other failure
        (a 421 greeting: busy for that connection) a waiting send opens first in turn.
        `arrived`: the shared failures before it came."""
        while True:
            failure = self._failure
            if failure is not None and (
                self._failures != arrived
                or (
                    isinstance(failure, TransportError)
                    and self._clock() - self._refused_at < self.refusal_shared
                )
            ):
                raise failure
            if self._vouched:
                break
            if self._opening is None:
                return await self._open_first()
            await asyncio.shield(self._opening)  # then look again
        try:
            return await self._open()
        except TransportError as exc:
            self._vouched = False  # the password changed? the first opens alone again
            self._shared(exc)
            raise

    async def _open_first(self) -> _Connection:
        self._opening = asyncio.get_running_loop().create_future()
        try:
            conn = await self._open()
        except TransportError as exc:
            self._shared(exc)
            raise
        except SessionDeferred as exc:
            if cannot_connect(exc.outcome):
                self._shared(exc)
            raise
        finally:  # failed or cancelled: a waiting send opens first in turn
            opening, self._opening = self._opening, None
            opening.set_result(None)
        self._vouched = True
        self._failure = None
        return conn

    def _shared(self, exc: Exception) -> None:
        self._failure = exc
        self._failures += 1
        if isinstance(exc, TransportError):
            self._refused_at = self._clock()

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
            socket_transport = None if implicit_tls else _writable(smtp.transport)
            if socket_transport is not None:
                # Pause (for drain()) at the first byte the kernel has not taken, resume
                # once it took them all. Under STARTTLS this also holds the TLS layer's
                # ciphertext back (where it can be seen) while the socket is busy.
                socket_transport.set_write_buffer_limits(high=0)
            if self.security is SmtpSecurity.STARTTLS:
                await smtp.starttls()
            if self._username is not None:
                await log_in(smtp, self._username, self._password or "")
            if smtp.is_ehlo_or_helo_needed:
                await smtp.ehlo()  # for SIZE / SMTPUTF8 / 8BITMIME before MAIL FROM
            transport = _writable(smtp.transport)
            if transport is None or not smtp.is_connected:
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
            below_tls = socket_transport
        offers = smtp.supports_extension
        standard_loop = isinstance(asyncio.get_running_loop(), asyncio.SelectorEventLoop)
        return _Connection(
            # From here on the session's replies come to our protocol, not aiosmtplib's.
            Session.take(transport, timeout=self._timeout),
            below_tls,
            in_clear,
            exact_flow=in_clear and standard_loop,
            pipelining=offers("pipelining"),
            size=offers("size"),
            smtputf8=offers("smtputf8"),
            eight_bit_mime=offers("8bitmime"),
        )

    # -- one transaction --------------------------------------------------------------

    async def _transact(
        self,
        conn: _Connection,
        message: OutgoingMessage,
        on_body: Callable[[], None] | None,
        *,
        written: int = 0,
    ) -> Outcome:
        """One message on the session; `written`: its MAIL, RCPT and DATA are already on
        the wire (they followed the previous message's final dot), only their replies are
        to be read."""
        conn.transactions += 1
        self._open_door(conn)
        try:
            return await self._converse(conn, message, on_body, written=written)
        finally:
            self._close_door(conn)

    def _open_door(self, conn: _Connection) -> None:
        cap = self.messages_per_connection
        if conn.pipelining and not self._closed and (cap is None or conn.transactions < cap):
            conn.door = True
            self._doors += 1

    def _close_door(self, conn: _Connection) -> None:
        """This session takes no waiting message after its current one (it took one, or
        the message ended before its body): a send that waited for it gets a free slot."""
        if not conn.door:
            return
        conn.door = False
        self._doors -= 1
        while self._in_use < self.connections and len(self._waiting) > self._doors:
            waiter = self._first_waiter()
            if waiter is None:
                return
            self._in_use += 1
            waiter.handed.set_result(_Handoff(None))

    async def _converse(
        self,
        conn: _Connection,
        message: OutgoingMessage,
        on_body: Callable[[], None] | None,
        *,
        written: int,
    ) -> Outcome:
        session = conn.session
        reused = conn.transactions > 1
        commands: list[bytes] = []
        if not written:
            prepared = _prepare(conn, message)
            if isinstance(prepared, Outcome):
                return prepared
            commands = prepared
        replies: list[SMTPResponse] = []
        try:
            if conn.pipelining:
                if not written:
                    session.write(b"".join(commands), replies=len(commands))
                for _ in range(written or len(commands)):
                    replies.append(await session.reply())
                    if replies[-1].code == SMTPStatus.domain_unavailable:
                        break  # 421: the server is closing; nothing more will come
            else:
                for command in commands:
                    session.write(command, replies=1)
                    replies.append(await session.reply())
                    if not _goes_on(replies):
                        break
        except (OSError, MalformedReply) as exc:  # lost, timed out, or not SMTP
            session.close()
            if reused and not replies and isinstance(exc, ConnectionLost):
                raise _Stale from exc
            return Outcome(DeliveryStatus.DEFERRED, None, f"{_describe(exc)} before DATA")
        mail = replies[0]
        if mail.code != SMTPStatus.completed:
            if reused and mail.code == SMTPStatus.domain_unavailable:
                session.close()
                raise _Stale  # a 421 meant for the idle session, read as MAIL's reply
            await self._after_refusal(conn, replies)
            if mail.code < 500:
                return Outcome(DeliveryStatus.DEFERRED, mail.code, mail.message)
            if mail.code == AUTH_REQUIRED:
                raise login_required(mail.code, mail.message)
            # Every message of a campaign has the same sender (or needs the same login),
            # so this is the session's problem, not this recipient's: failing messages
            # one by one would finalise the whole list on a config error.
            if is_size_refusal(mail.code, mail.message, size_announced=conn.size):
                raise message_too_big(mail.code, mail.message, _size(message))
            raise sender_refused(mail.code, mail.message, message.sender)
        rcpt = replies[1]
        if rcpt.code not in _RECIPIENT_ACCEPTED:
            await self._after_refusal(conn, replies)
            if rcpt.code == AUTH_REQUIRED:  # some relays ask for the login only at RCPT
                raise login_required(rcpt.code, rcpt.message, at_recipient=True)
            return _refused(rcpt)
        start = replies[2]
        if start.code != SMTPStatus.start_input:
            await self._after_refusal(conn, replies)
            return _refused(start)
        if on_body is not None:
            on_body()
        return await self._send_body(conn, message)

    async def _after_refusal(self, conn: _Connection, replies: list[SMTPResponse]) -> None:
        """RSET, so the session can carry the next message; or close it where it cannot:
        the server is closing (421), or it took DATA although an earlier command of the
        pipelined group was refused (RFC 2920 says it must not: the session is in the
        middle of a message we will not send)."""
        codes = [reply.code for reply in replies]
        if SMTPStatus.domain_unavailable in codes or codes[-1] == SMTPStatus.start_input:
            conn.session.close()
            return
        await _reset(conn.session)

    async def _send_body(self, conn: _Connection, message: OutgoingMessage) -> Outcome:
        session = conn.session
        body = message.data if message.wire_ready else _dot_stuff(message.data)
        # In the clear one write will do: drained, all of it is in the kernel. Under TLS
        # the dot goes in a write of its own once the body has been handed on, so that it
        # waits in the TLS layer (where it can be seen) while the socket is still busy.
        # Where the relay pipelines, the next message's envelope may follow the dot in the
        # same write (see _take_next): then the drain waits only until what is still held
        # is no more than that envelope, i.e. the dot has been handed on.
        follow = b""
        if conn.in_clear:
            if conn.exact_flow:
                follow = self._take_next(conn)
            pieces: tuple[bytes, ...] = (body + _END_OF_DATA + follow,)
        else:
            pieces = (body, _END_OF_DATA)
        next_owes = conn.next.written if follow and conn.next is not None else 0
        waited = False
        try:
            for index, piece in enumerate(pieces):
                if session.has_reply():
                    # The server answered or hung up before the end of the data.
                    return _before_the_dot(session, session.early_reply(), None)
                session.write(piece, replies=1 + next_owes if index == 0 else 0)
                if conn.write_failed():
                    return _before_the_dot(session, session.early_reply(), None)
                if conn.unsent() > len(follow):
                    waited = True
                    await asyncio.wait_for(session.drain(leave=len(follow)), self._timeout)
        except OSError as exc:  # lost or stalled (timeout) with the dot still here?
            # wait_for's timer fires a turn or more before this runs, and meanwhile the
            # socket may have taken the rest, dot and all (its resume went to a cancelled
            # waiter): then the relay may have the message, and its reply is read as
            # usual. Checked here, in the same step as the abort would be.
            if not (
                isinstance(exc, TimeoutError)
                and index == len(pieces) - 1
                and not conn.write_failed()
                and conn.unsent() <= len(follow)
            ):
                return _before_the_dot(session, session.early_reply(), exc)
        if (
            not follow
            and session.lost is None  # checked in the same step as the write below
            and not session.transport.is_closing()
            and (follow := self._take_next(conn))
            and conn.next is not None
        ):
            # TLS, or a loop whose flow control cannot show when the dot alone has left:
            # the next envelope goes after the dot, in a write of its own. (It cannot
            # raise: nothing ran since the check above. If the session was lost, the
            # waiting message is given a fresh one by _release.)
            session.write(follow, replies=conn.next.written)
        # From here on the relay may have the whole message.
        try:
            reply = await session.reply()
        except OSError as exc:  # lost, or no reply within the timeout
            # A timeout leaves the transports open: a dot still queued there never left.
            # (With a next envelope behind it, the dot was drained past before this.)
            unsent = 0 if session.transport.is_closing() or conn.next is not None else conn.unsent()
            session.abort()
            if unsent:
                return Outcome(DeliveryStatus.DEFERRED, None, f"{_describe(exc)} during DATA")
            return Outcome(
                DeliveryStatus.UNKNOWN,
                None,
                f"{_describe(exc)} after the end of DATA; the message may have been delivered",
            )
        except MalformedReply as exc:  # garbage where the reply should be
            session.close()
            return Outcome(DeliveryStatus.UNKNOWN, None, f"unreadable reply to DATA: {exc}")
        if not 200 <= reply.code < 600 or 300 <= reply.code < 400:
            session.close()
            return Outcome(
                DeliveryStatus.UNKNOWN,
                reply.code,
                f"no verdict to the end of DATA: {reply.message}",
            )
        if reply.code == SMTPStatus.completed:
            pass
        elif reply.code == SMTPStatus.domain_unavailable or waited or conn.next is not None:
            # 421: the server is closing. Or a refusal read after we had to wait for the
            # socket: it may have come before the end of the data, and the server may
            # answer the dot as well, so such a session is not reused. The same with the
            # next envelope behind the dot: a relay that refused early and answered the
            # dot too would have that answer read as the next message's MAIL reply (an
            # RSET cannot absorb it: it would cancel that envelope). The next message
            # starts again on a fresh session; its body never left.
            session.close()
        else:
            await _reset(session)
        return Outcome(classify_reply(reply.code, reply.message), reply.code, reply.message)

    def _take_next(self, conn: _Connection) -> bytes:
        """The envelope of a send() waiting for a session, to follow this message's final
        dot, where the relay offers PIPELINING (RFC 2920 lets the end of DATA be followed
        by more commands): the reply to the dot and the next message's three then come
        back together, one write and one wake-up a message fewer on each side. That
        message takes the session over once the dot's reply has been read (_release).
        Empty when nobody waits, or the session should not carry another message."""
        if not conn.door:
            return b""
        follow = b""
        while self._waiting and not self._closed:
            waiter = self._waiting[0]
            if waiter.handed.done():  # cancelled meanwhile
                self._waiting.popleft()
                continue
            commands = _prepare(conn, waiter.message)
            if isinstance(commands, Outcome):
                break  # it goes the usual way, and fails there
            self._waiting.popleft()
            waiter.written = len(commands)
            conn.next = waiter
            follow = b"".join(commands)
            break
        self._close_door(conn)  # after taking the waiter: it would be given a slot
        return follow


_END_OF_DATA = b".\r\n"
# Seconds a refused session (TransportError) answers every send at once: long enough
# for the engine to stop. MAILER_RELAYS tries a relay that refused again after its
# cooldown, so its transports share a refusal for less than that (relay_pool).
REFUSAL_SHARED = 10.0

# The password is tried once: the mechanisms in this order, the next only if the relay
# says the last one cannot be used (504 not implemented, 534 too weak, 538 needs
# encryption). aiosmtplib's login() tries every mechanism offered, so a wrong password
# was refused twice a session by a relay offering PLAIN and LOGIN. PLAIN first: it works
# whatever way the relay stores passwords (CRAM-MD5 needs them in the clear), and the
# session is encrypted wherever a password is sent.
_MECHANISMS = ("plain", "login", "cram-md5")
_MECHANISM_UNUSABLE = frozenset({504, 534, 538})


async def log_in(smtp: aiosmtplib.SMTP, username: str, password: str) -> None:
    """AUTH on an open session, the password tried once (see _MECHANISMS)."""
    if smtp.is_ehlo_or_helo_needed:
        await smtp.ehlo()  # what the relay offers (again after STARTTLS)
    offered = [name for name in _MECHANISMS if name in smtp.server_auth_methods]
    if not offered:
        await smtp.login(username, password)  # says AUTH is not offered, or none it knows
        return
    for name in offered:
        try:
            await getattr(smtp, f"auth_{name.replace('-', '')}")(username, password)
            return
        except aiosmtplib.SMTPAuthenticationError as exc:
            if exc.code not in _MECHANISM_UNUSABLE or name == offered[-1]:
                raise


_WRITE_METHODS = ("write", "abort", "get_write_buffer_size", "set_write_buffer_limits")


def _writable(transport: asyncio.BaseTransport | None) -> asyncio.WriteTransport | None:
    """The transport, if it takes writes with flow control. uvloop's transports have the
    whole interface without subclassing asyncio's classes, so ask for the methods."""
    if isinstance(transport, asyncio.WriteTransport):
        return transport
    if transport is not None and all(hasattr(transport, name) for name in _WRITE_METHODS):
        return cast(asyncio.WriteTransport, transport)
    return None


_RECIPIENT_ACCEPTED = (SMTPStatus.completed, SMTPStatus.will_forward)


def _prepare(conn: _Connection, message: OutgoingMessage) -> list[bytes] | Outcome:
    """The message's MAIL FROM, RCPT TO and DATA for this session, or why it cannot go."""
    utf8 = not (message.sender.isascii() and message.recipient.isascii())
    if utf8 and not conn.smtputf8:
        return Outcome(DeliveryStatus.FAILED, None, "relay does not support SMTPUTF8")
    try:
        return _envelope(conn, message, utf8=utf8)
    except (ValueError, UnicodeError) as exc:  # an address not fit for the wire
        return Outcome(DeliveryStatus.FAILED, None, f"invalid address: {exc}")


def _envelope(conn: _Connection, message: OutgoingMessage, *, utf8: bool) -> list[bytes]:
    """MAIL FROM, RCPT TO and DATA for one message, as the relay's extensions allow."""
    encoding = "utf-8" if utf8 else "ascii"
    mail = b"MAIL FROM:" + _path(message.sender).encode(encoding)
    if conn.size:
        mail += b" SIZE=%d" % _size(message)
    if utf8:
        mail += b" SMTPUTF8"
    if conn.eight_bit_mime and not message.data.isascii():
        mail += b" BODY=8BITMIME"
    rcpt = b"RCPT TO:" + _path(message.recipient).encode(encoding)
    return [mail + b"\r\n", rcpt + b"\r\n", b"DATA\r\n"]


# RFC 5322 dot-atom on both sides of the @ (non-ASCII allowed, for SMTPUTF8): every
# address email-validator has normalised, so all of ours. Such an address goes on the
# line as it is; anything else (a quoted local part, a literal domain, a stray space or
# bracket) takes aiosmtplib's parser, which also refuses what could smuggle parameters or
# commands onto the line. The parser (email.utils.parseaddr) costs 30-60 us an address
# here, twice a message; the pattern 2-4 us.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+"
_DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*"
_PLAIN_ADDRESS = re.compile(rf"{_DOT_ATOM}@{_DOT_ATOM}")


def _size(message: OutgoingMessage) -> int:
    """The message's size as RFC 1870 counts it: with CRLF line ends (ending in one), not
    counting dot-stuffing or the final dot. Only a message not built wire-ready (a notice
    whose quoted-printable has bare LF soft breaks) differs from its length."""
    if message.wire_ready:
        return len(message.data)
    body = _LINE_ENDINGS.sub(b"\r\n", message.data)
    return len(body) if body.endswith(b"\r\n") else len(body) + 2


def _path(address: str) -> str:
    """The <reverse-path> or <forward-path> for an address (RFC 5321 4.1.2)."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return quote_address(address)


def _goes_on(replies: list[SMTPResponse]) -> bool:
    """Whether the command after the last replied one is worth sending (unpipelined)."""
    code = replies[-1].code
    if len(replies) == 1:
        return code == SMTPStatus.completed
    return code in _RECIPIENT_ACCEPTED


def _before_the_dot(
    session: Session, early: SMTPResponse | None, exc: BaseException | None
) -> Outcome:
    """The connection failed, stalled, or the server spoke, before the final dot was in
    the kernel: the relay cannot have accepted the message. The session is in the middle
    of DATA and cannot be reused."""
    session.abort()
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


async def _reset(session: Session) -> None:
    """RSET after a refused transaction, so the session can carry the next message."""
    try:
        session.write(b"RSET\r\n", replies=1)
        reply = await session.reply()
    except (OSError, MalformedReply):
        reply = None
    if reply is None or reply.code != SMTPStatus.completed:
        session.close()  # a session that cannot reset is not reused


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, MalformedReply):
        return f"unreadable reply ({exc})"
    return "connection lost"


def _refused(reply: SMTPResponse) -> Outcome:
    status = classify_reply(reply.code, reply.message)
    if status is DeliveryStatus.SENT:  # no body went: whatever it meant, not a delivery
        status = DeliveryStatus.DEFERRED
    return Outcome(status, reply.code, reply.message)
