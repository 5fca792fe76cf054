"""What the SMTP session needs from its event loop's TCP transport, on asyncio's loop and on
uvloop's (whose transports are libuv streams, not asyncio's classes).

The sender calls a message DEFERRED (and sends it again later) only when the relay cannot
have it: the final dot never reached the kernel. That rests on three things the transport
must do, checked here byte for byte against a plain socket that the test reads by hand:
`drain()` returns only once nothing is left in user space; `abort()` drops what is left
there, at once; a clean close hands on everything first, and a reset fails the drain.
"""

from __future__ import annotations

import asyncio
import select
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from mailer.delivery.session import ConnectionLost, Session

pytestmark = pytest.mark.every_event_loop

# Far more than the two kernels hold between them once the reader stops (the reader's
# receive buffer is pinned at 32 KiB; the writer's send buffer grows to 4 MiB at most).
PAYLOAD = bytes(range(256)) * (8 * 4096)  # 8 MiB


@dataclass
class Pair:
    session: Session
    transport: asyncio.WriteTransport
    reader: socket.socket  # the far end, non-blocking, read only when a test says so

    def read_what_is_there(self) -> int:
        """Read until the kernel has nothing more for now (no turn of the event loop)."""
        got = 0
        for _ in range(3):  # the writer's kernel refills the reader's buffer at once
            try:
                while chunk := self.reader.recv(1 << 20):
                    got += len(chunk)
            except BlockingIOError:
                pass
        return got

    async def read_to_the_end(self) -> int:
        """Read (letting the loop run) until the writer's end is closed."""
        loop = asyncio.get_running_loop()
        got = 0
        while chunk := await asyncio.wait_for(loop.sock_recv(self.reader, 1 << 20), 30):
            got += len(chunk)
        return got

    def writer_can_write(self) -> bool:
        fd = self.transport.get_extra_info("socket").fileno()
        return bool(select.select([], [fd], [], 10)[1])


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    """A Session on the running loop's own TCP transport, flow control as SmtpTransport
    sets it (pause at the first byte not taken by the kernel, resume at none)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, *listener.getsockname())
    reader, _ = listener.accept()
    listener.close()
    reader.setblocking(False)
    transport.set_write_buffer_limits(high=0)
    session = Session.take(transport, timeout=5.0)
    yield Pair(session, transport, reader)
    session.abort()
    reader.close()


async def test_drain_returns_only_once_nothing_is_left_above_the_kernel(pair: Pair) -> None:
    """While the reader is stopped, drain() waits with bytes still held; it returns at the
    moment the last of them went to the kernel, never before."""
    pair.session.write(PAYLOAD, replies=0)
    held = pair.session.unsent()
    assert 0 < held < len(PAYLOAD)
    draining = asyncio.create_task(pair.session.drain())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not draining.done()  # nothing is read: nothing can leave
    unsent_when_drained: list[int] = []
    draining.add_done_callback(lambda _: unsent_when_drained.append(pair.session.unsent()))

    loop = asyncio.get_running_loop()
    got = 0
    while got < len(PAYLOAD):
        got += len(await asyncio.wait_for(loop.sock_recv(pair.reader, 1 << 20), 30))
    await asyncio.wait_for(draining, 30)
    assert unsent_when_drained == [0]
    assert got == len(PAYLOAD)


async def test_abort_drops_at_once_what_the_transport_still_holds(pair: Pair) -> None:
    """The reader takes what its kernel holds, so the writer's socket could take more, and
    the session is aborted before the loop turns. Exactly what the kernel had at that
    moment arrives, nothing after: a byte sent later could be the final dot of a message
    already called DEFERRED (and so sent twice). uvloop's abort() alone only schedules the
    close, and libuv writes its queue in the meantime; asyncio's drops the buffer."""
    pair.session.write(PAYLOAD, replies=0)
    got = pair.read_what_is_there()
    assert pair.writer_can_write()
    held = pair.session.unsent()
    assert held > 0
    in_the_kernel = len(PAYLOAD) - held

    pair.session.abort()
    got += await pair.read_to_the_end()

    assert got == in_the_kernel


async def test_a_clean_close_hands_everything_on_first(pair: Pair) -> None:
    """close() with bytes held: they all reach the reader, then the end of the connection;
    a drain waiting meanwhile returns (the session's reading of a clean connection_lost)."""
    pair.session.write(PAYLOAD, replies=0)
    assert pair.session.unsent() > 0
    draining = asyncio.create_task(pair.session.drain())
    await asyncio.sleep(0)
    pair.session.close()

    got = await pair.read_to_the_end()

    assert got == len(PAYLOAD)
    await asyncio.wait_for(draining, 30)  # no ConnectionLost
    assert isinstance(pair.session.lost, ConnectionLost)


async def test_a_reset_while_bytes_are_held_fails_the_drain(pair: Pair) -> None:
    """The reader resets the connection (SO_LINGER 0) with our bytes still held: they can
    never leave, so a waiting drain raises instead of reporting them handed on."""
    pair.session.write(PAYLOAD, replies=0)
    assert pair.session.unsent() > 0
    draining = asyncio.create_task(pair.session.drain())
    await asyncio.sleep(0)
    pair.reader.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    pair.reader.close()

    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(draining, 30)
    assert pair.session.lost is not None
