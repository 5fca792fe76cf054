"""One SMTP session's transactions, once aiosmtplib has opened it: commands out, replies in.

aiosmtplib connects, does TLS (implicit or STARTTLS), AUTH and EHLO; then `Session.take`
moves the connection's transport onto this protocol for the messages. Why not keep
aiosmtplib for them too: its protocol holds one reply at a time. Data that arrives while
no read is pending is dropped, and a second reply already buffered is not parsed until
more data comes, so it cannot pipeline (RFC 2920), which is half the round trips of every
message and, measured here, a fifth of the sender's CPU (bench/README.md, sending). Here
every reply the server sends is parsed in order and kept until asked for, whenever it
arrives; a reply nobody asked for (a 421 sent to an idle session) marks the session as
not to be reused instead of being paired with the next command.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque

from aiosmtplib import SMTPResponse

__all__ = ["ConnectionLost", "MalformedReply", "Session"]

# RFC 5321 4.5.3.1.5: a reply line is at most 512 octets; EHLO-sized multi-line replies
# are a few KB. Anything much longer without a complete reply is not an SMTP server.
_MAX_PENDING = 64 * 1024


class ConnectionLost(ConnectionError):
    """The server closed the connection (or it broke) before the reply came."""


class MalformedReply(Exception):
    """The server sent something that is not an SMTP reply."""


class Session(asyncio.Protocol):
    """The protocol of an open SMTP session; `write` commands, then `reply()` once each.

    Flow control is kept so that `drain()` can say when everything written has been
    handed on: with a write-buffer high-water mark of zero on the transport, "not paused"
    means "nothing of ours is waiting in this transport's buffer".
    """

    def __init__(self, transport: asyncio.WriteTransport, *, timeout: float) -> None:
        self.transport = transport
        self.timeout = timeout  # for each reply
        self._loop = asyncio.get_running_loop()
        self._pending = bytearray()
        self._replies: deque[SMTPResponse | BaseException] = deque()
        self._expected = 0  # replies owed for what was written and not yet read
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.lost: BaseException | None = None
        self.spoke_out_of_turn = False
        self._gone = False

    @classmethod
    def take(cls, transport: asyncio.WriteTransport, *, timeout: float) -> Session:
        """Receive the transport's data from now on (aiosmtplib's protocol no longer does)."""
        session = cls(transport, timeout=timeout)
        transport.set_protocol(session)
        return session

    # -- for the transaction ------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Open, in step with the server, and with nothing unread."""
        return self.in_step(owed=0) and not self._pending  # half a reply is out of turn

    def in_step(self, *, owed: int) -> bool:
        """Open, and owing replies to exactly `owed` commands, none of them read yet."""
        return (
            self.lost is None
            and not self.transport.is_closing()
            and not self.spoke_out_of_turn
            and self._expected == owed
            and len(self._replies) <= owed
        )

    def write(self, data: bytes, *, replies: int) -> None:
        """Write one or more commands (or the body) that `replies` replies will answer."""
        if self.lost is not None or self.transport.is_closing():
            raise ConnectionLost("connection lost")
        self._expected += replies
        self.transport.write(data)

    def has_reply(self) -> bool:
        """A reply (or the end of the connection) has arrived and is waiting to be read."""
        return bool(self._replies) or self.lost is not None

    def early_reply(self) -> SMTPResponse | None:
        """The reply that has arrived, if one has (and is readable), without waiting."""
        first = self._replies[0] if self._replies else None
        if not isinstance(first, SMTPResponse):
            return None
        self._replies.popleft()
        self._expected -= 1
        return first

    async def reply(self) -> SMTPResponse:
        """The next reply, in the order the commands were written, within the timeout."""
        if not self._replies and self.lost is None:
            waiter = self._waiter = self._loop.create_future()
            timer = self._loop.call_later(self.timeout, _time_out, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        if self._replies:
            self._expected -= 1
            reply = self._replies.popleft()
            if isinstance(reply, BaseException):
                raise reply
            return reply
        raise ConnectionLost("connection lost") from self.lost

    def unsent(self) -> int:
        return self.transport.get_write_buffer_size()

    async def drain(self, *, leave: int = 0) -> None:
        """Return once the transport has handed on everything written but at most its last
        `leave` bytes; raise if the connection broke with more than that still held.

        `leave` is for a transport whose limits are high=0 (the socket's, in the clear):
        both marks move to `leave` while waiting. asyncio's socket transport calls
        resume_writing after any send that leaves no more than the low-water mark, so the
        resume comes the moment the bytes before the last `leave` are in the kernel."""
        if not self._paused:
            return
        if leave:
            self.transport.set_write_buffer_limits(high=leave, low=leave)
        try:
            if leave and self.transport.get_write_buffer_size() <= leave:
                return
            waiter = self._drain_waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._drain_waiter = None
        finally:
            if leave and not self.transport.is_closing():
                self.transport.set_write_buffer_limits(high=0)

    def close(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        """Close now, dropping whatever is still buffered (it must never leave)."""
        if self._gone:  # after a flushed close(), 3.11's abort() would raise
            return
        self.transport.abort()
        # asyncio's abort() drops its buffer at once. uvloop's only schedules the close
        # for the next turn of the loop and keeps libuv's write queue until then: if the
        # socket is writable in between, libuv sends it, final dot and all, after we
        # called the message DEFERRED (measured: 4 MB of 4.6 MB buffered left that way).
        # Shutting the socket's sending side now makes every later write fail; what the
        # kernel already holds goes as before, then the FIN.
        _shut_down(self.transport)

    # -- asyncio.Protocol ---------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        pending = self._pending
        pending += data
        parsed = False
        while True:
            end = _reply_end(pending)
            if end is None:
                break
            reply = _parse(bytes(pending[:end]))
            del pending[:end]
            parsed = True
            if isinstance(reply, MalformedReply) or len(self._replies) >= self._expected:
                # Nothing we wrote asked for this (a timeout notice to an idle session,
                # a server gone wrong): never pair it with a later command.
                if self.spoke_out_of_turn:
                    continue  # one is enough to retire the session; keep no more
                self.spoke_out_of_turn = True
            self._replies.append(reply)
        if len(pending) > _MAX_PENDING:
            pending.clear()
            self._replies.append(MalformedReply("reply too long"))
            self.spoke_out_of_turn = parsed = True
        if parsed:
            self._wake()

    def eof_received(self) -> bool:
        self.lost = ConnectionLost("the server closed the connection")
        self._wake()
        return False  # close our end too

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone = True
        if self.lost is None:
            self.lost = exc or ConnectionLost("connection closed")
        self._wake()
        # As with asyncio's streams: a clean close comes only after the transport has
        # handed on everything it held (close() flushes first; a server's EOF closes our
        # end that way), so a waiting drain is done and the bytes, the final dot among
        # them, reached the kernel. An error means what was still held never left.
        self._resume(exc)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._resume(None)

    def _resume(self, exc: BaseException | None) -> None:
        self._paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(ConnectionLost("connection lost"))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _shut_down(transport: asyncio.BaseTransport) -> None:
    """No more bytes leave this connection's socket, whatever its transport still holds."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        # A duplicate: the transport's own socket object does not offer shutdown() under
        # uvloop. shutdown() acts on the connection, not on the descriptor.
        with sock.dup() as duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed or reset: nothing can leave either


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("no reply within the timeout"))


def _reply_end(buffer: bytearray) -> int | None:
    """Where the first complete reply in the buffer ends (after its last line's LF)."""
    start = 0
    while True:
        newline = buffer.find(b"\n", start)
        if newline == -1:
            return None
        # "250-..." continues the reply; "250 ..." or a bare "250" ends it (RFC 5321 4.2.1)
        if buffer[start + 3 : start + 4] != b"-":
            return newline + 1
        start = newline + 1


def _parse(raw: bytes) -> SMTPResponse | MalformedReply:
    code = -1
    lines = []
    for line in raw.split(b"\n")[:-1]:
        if not line[:3].isdigit():
            return MalformedReply(f"not an SMTP reply: {line[:80]!r}")
        this_code = int(line[:3])
        if code not in (-1, this_code):
            return MalformedReply(f"reply codes differ within one reply: {raw[:80]!r}")
        code = this_code
        lines.append(line[4:].strip(b" \t\r").decode("utf-8", "surrogateescape"))
    return SMTPResponse(code, "\n".join(lines))
