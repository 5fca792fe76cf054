"""A real SMTP server for tests: aiosmtpd on port 0, recording what it receives, with faults.

In a test (the server runs on the test's own event loop):

    async with SmtpTestServer() as server:
        server.rcpt_replies["gone@example.org"] = "550 5.1.1 No such user"
        ...  # send to 127.0.0.1:server.port
        assert server.messages[0].rcpt_tos == ["someone@example.org"]

From synchronous code (e.g. a CLI test whose command calls asyncio.run itself), use
`with SmtpTestServer() as server:` instead: the same server on a background thread.

As a separate process, for crash tests that kill the client:

    python tests/smtp_server.py --port-file F --record-dir D [--delay-end SECONDS] [--journal]

writes the port to F once listening, then each message as D/NNNNNNNN.eml (exact bytes)
plus D/NNNNNNNN.json (envelope, written last: a message is complete once its .json
exists). `SmtpServerProcess` wraps that, and `load_recorded(D)` reads the messages back.
With `--journal` (for tests of thousands of messages) it appends instead: the bodies to
D/bodies, then one JSON line per message to D/envelopes (envelope, offset and length of
the body; a message is complete once its line ends): two write()s on two open files,
where creating and renaming four files per message cost the server as much CPU as
aiosmtpd itself. `SmtpServerProcess.count()` counts the messages in either form.

Faults are plain attributes; set them before (or between) sends:

    rcpt_replies   {address: "450 4.2.1 Busy"}   reply to RCPT TO for that address
    mail_reply     "451 4.3.0 Try later"         reply to every MAIL FROM
    data_reply     "421 4.3.2 Closing"           reply to DATA instead of 354 (421 closes)
    end_reply      "554 5.7.1 Spam"              reply to the final dot instead of 250
    drop_mid_data  N                             next N messages: 354, then reset (RST) at once
    close_mid_data N                             next N: 354, read part of the body, hang up as
                                                 a relay that restarts: FIN, then RST for the
                                                 data that keeps arriving
    stall_mid_data N                             next N: 354, read part of the body, then
                                                 nothing more, never answer (a hung relay)
    mid_data_bytes 1 << 20                       how much of the body those two read first
                                                 (default 0: one line); they also shrink the
                                                 session's receive buffer to 64 KiB, so the
                                                 client's writes back up soon after
    mid_data_reply "552 5.3.4 Too big"           close_mid_data says this before hanging up
    drop_after_dot N                             next N: read and record it, close, no reply
    delays         {"MAIL": 2.0}                 sleep before replying to EHLO, MAIL, RCPT,
                                                 DATA (before the 354) or END (the final dot)

Fixtures (import them into conftest.py): `smtp_server` (async, on the test loop),
`smtp_server_thread` (sync), `smtp_server_process`, and `tls_files` (a trustme CA and a
certificate for 127.0.0.1/localhost, session-scoped).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from mailer.delivery.catcher import close_server

HOSTNAME = "smtp.test"
_EOF_GRACE = 0.5  # seconds a session keeps reading buffered input after the client's EOF


class Received(NamedTuple):
    """One message as the server saw it."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: tuple[str, ...] = ()  # MAIL FROM's parameters (SIZE=, BODY=, SMTPUTF8)


@dataclass(frozen=True)
class TlsFiles:
    """A private CA (trustme) and a server certificate for 127.0.0.1 and localhost."""

    ca_file: Path  # give this to the client (smtp_ca_file / ca_file)
    server_context: ssl.SSLContext

    @classmethod
    def create(cls, directory: Path) -> TlsFiles:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        ca_file = directory / "test-ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        return cls(ca_file=ca_file, server_context=context)


class SmtpTestServer:
    """aiosmtpd on a free port; see the module docstring for faults and recordings."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: TlsFiles | None = None,
        implicit_tls: bool = False,
        require_starttls: bool = False,
        auth: tuple[str, str] | None = None,
        record_dir: Path | None = None,
        journal: bool = False,
        pipelining: bool = True,
    ) -> None:
        self.host = host
        # Offer PIPELINING (RFC 2920) in the EHLO reply, as Postfix and most relays do.
        # aiosmtpd reads commands line by line, so it serves a pipelined client either way.
        self.pipelining = pipelining
        self.port = port
        self.tls = tls
        self.implicit_tls = implicit_tls
        self.require_starttls = require_starttls
        self.auth = auth
        self.record_dir = record_dir
        self.journal = journal
        self._journal: _Journal | None = None
        # recordings
        self.messages: list[Received] = []
        self.connections_total = 0
        self.active_connections = 0
        self.peak_connections = 0
        self.commands: Counter[str] = Counter()  # RSET, QUIT, MAIL, RCPT, DATA seen
        self.logins: list[str] = []
        self.refused_logins: list[str] = []
        # faults
        self.rcpt_replies: dict[str, str] = {}
        self.mail_reply: str | None = None
        self.data_reply: str | None = None
        self.end_reply: str | None = None
        self.drop_mid_data = 0
        self.close_mid_data = 0
        self.stall_mid_data = 0
        self.mid_data_bytes = 0
        self.mid_data_reply: str | None = None
        self.drop_after_dot = 0
        self.delays: dict[str, float] = {}
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    # -- on the running loop ----------------------------------------------------------

    async def start(self) -> int:
        if self.journal and self.record_dir is not None:
            self._journal = _Journal(self.record_dir)
        loop = asyncio.get_running_loop()
        ssl_context = self.tls.server_context if self.tls and self.implicit_tls else None
        self._server = await loop.create_server(
            self._new_session, self.host, self.port, ssl=ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        sessions = list(self._sessions)
        self.drop_connections()
        await close_server(server, sessions)
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    async def __aenter__(self) -> SmtpTestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- on a background thread, for synchronous tests --------------------------------

    def start_in_thread(self) -> int:
        loop = asyncio.new_event_loop()
        self._thread_loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="smtp-test-server")
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=10)

    def stop_in_thread(self) -> None:
        loop, thread = self._thread_loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._thread_loop = self._thread = None

    def __enter__(self) -> SmtpTestServer:
        self.start_in_thread()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_in_thread()

    # -- helpers for tests ------------------------------------------------------------

    @property
    def recipients(self) -> list[str]:
        """Every recipient of every received message, in order."""
        return [rcpt for message in self.messages for rcpt in message.rcpt_tos]

    def drop_connections(self) -> None:
        """Close every open session now, as a server does to idle clients (or on restart)."""
        for session in list(self._sessions):
            for transport in (session.transport, session._original_transport):
                if transport is not None:
                    transport.close()  # the TLS layer and, after STARTTLS, the socket

    def reset_faults(self) -> None:
        self.rcpt_replies.clear()
        self.mail_reply = self.data_reply = self.end_reply = self.mid_data_reply = None
        self.drop_mid_data = self.close_mid_data = self.stall_mid_data = 0
        self.mid_data_bytes = self.drop_after_dot = 0
        self.delays.clear()

    # -- aiosmtpd plumbing ------------------------------------------------------------

    def _new_session(self) -> _Session:
        use_starttls = self.tls is not None and not self.implicit_tls
        session = _Session(
            self,
            hostname=HOSTNAME,
            enable_SMTPUTF8=True,
            tls_context=self.tls.server_context if use_starttls and self.tls else None,
            require_starttls=self.require_starttls,
            # aiosmtpd only counts STARTTLS as TLS; under implicit TLS (or none, for plain
            # AUTH tests) it must be told to offer AUTH anyway.
            auth_require_tls=use_starttls,
            authenticator=self._authenticate if self.auth else None,
            loop=asyncio.get_running_loop(),
        )
        self._sessions.add(session)
        return session

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = self.auth is not None and (data.login.decode(), data.password.decode()) == self.auth
        (self.logins if ok else self.refused_logins).append(data.login.decode())
        return AuthResult(success=ok, handled=False, auth_data=data)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # what aiosmtpd does itself when there is no hook
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def _delay(self, step: str) -> None:
        if self.delays.get(step):
            await asyncio.sleep(self.delays[step])

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.commands["MAIL"] += 1
        await self._delay("MAIL")
        if self.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.commands["RCPT"] += 1
        await self._delay("RCPT")
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self._delay("END")
        if self.end_reply is not None:
            return self.end_reply
        self._record(envelope)
        if self.drop_after_dot > 0:
            self.drop_after_dot -= 1
            assert server.transport is not None
            server.transport.close()
            await asyncio.Future()  # cancelled by aiosmtpd when the connection is lost
        return f"250 2.0.0 Queued as {len(self.messages)}"

    def _record(self, envelope: Envelope) -> None:
        received = Received(
            str(envelope.mail_from),
            list(envelope.rcpt_tos),
            envelope.original_content or b"",
            tuple(envelope.mail_options),
        )
        self.messages.append(received)
        if self._journal is not None:
            self._journal.append(received)
        elif self.record_dir is not None:
            stem = self.record_dir / f"{len(self.messages):08d}"
            _write_atomic(stem.with_suffix(".eml"), received.data)
            envelope_json = {"mail_from": received.mail_from, "rcpt_tos": received.rcpt_tos}
            _write_atomic(stem.with_suffix(".json"), json.dumps(envelope_json).encode())


class _Session(SMTP):
    """One connection: counts itself and applies the faults aiosmtpd has no hook for."""

    def __init__(self, owner: SmtpTestServer, **options: Any) -> None:
        super().__init__(owner, **options)
        self.owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # not the second call that follows STARTTLS
            owner = self.owner
            owner.connections_total += 1
            owner.active_connections += 1
            owner.peak_connections = max(owner.peak_connections, owner.active_connections)
        super().connection_made(transport)

    def eof_received(self) -> bool | None:
        # A real MTA reads its input in order: a message whose final dot arrived before
        # the client vanished (kill -9 right after sending) is still accepted. aiosmtpd
        # cancels its handler at EOF even with that message buffered, so give the handler
        # a moment to finish what has arrived before doing what aiosmtpd does.
        asyncio.get_running_loop().call_later(_EOF_GRACE, self._eof_after_grace)
        return True  # keep the half-closed transport open meanwhile

    def _eof_after_grace(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing() and not super().eof_received():
            transport.close()

    def connection_lost(self, error: Exception | None) -> None:
        self.owner.active_connections -= 1
        self.owner._sessions.discard(self)
        super().connection_lost(error)

    async def smtp_RSET(self, arg: str) -> None:
        self.owner.commands["RSET"] += 1
        await super().smtp_RSET(arg)

    async def smtp_QUIT(self, arg: str) -> None:
        self.owner.commands["QUIT"] += 1
        await super().smtp_QUIT(arg)

    async def smtp_DATA(self, arg: str) -> None:
        owner = self.owner
        owner.commands["DATA"] += 1
        await owner._delay("DATA")
        if owner.data_reply is not None and self.envelope and self.envelope.rcpt_tos:
            await self.push(owner.data_reply)
            if owner.data_reply.startswith("421") and self.transport is not None:
                self.transport.close()
            return
        if self.envelope and self.envelope.rcpt_tos:
            if owner.drop_mid_data > 0:
                owner.drop_mid_data -= 1
                await self.push("354 End data with <CR><LF>.<CR><LF>")
                # Abort (RST) at once, as a crashed or overloaded server does. On the test's
                # loop the socket closes in the very next callback, before the client can
                # read the 354 and write: the body never reaches even the client's kernel,
                # whatever its size. (Once it has, the relay may have the message, and the
                # client rightly says UNKNOWN: see close_mid_data for a drop mid-body.)
                self._hang_up(socket_option=(socket.SO_LINGER, struct.pack("ii", 1, 0)))
                await asyncio.Future()  # cancelled by aiosmtpd when the connection is lost
            if owner.close_mid_data > 0 or owner.stall_mid_data > 0:
                hang_up = owner.close_mid_data > 0
                if hang_up:
                    owner.close_mid_data -= 1
                else:
                    owner.stall_mid_data -= 1
                await self._read_part_of_the_body()
                if hang_up:
                    if owner.mid_data_reply is not None:
                        await self.push(owner.mid_data_reply)
                    # What a relay that restarts does: its end closes (FIN, read by the
                    # client as EOF), and the data still arriving is answered with RST.
                    self._hang_up(shutdown=True)
                # Stalled: read nothing more, so that once aiosmtpd's buffer and the
                # kernel's are full the client can write no further.
                await asyncio.Future()  # cancelled when the connection is lost or at stop()
        await super().smtp_DATA(arg)

    async def _read_part_of_the_body(self) -> None:
        transport = self.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            # No receive-buffer autotuning: what the client can still push into the
            # kernels stays well below the multi-megabyte bodies such tests send.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        if self.owner.mid_data_bytes:
            await self._reader.readexactly(self.owner.mid_data_bytes)
        else:
            await self._reader.readline()

    def _hang_up(
        self, *, shutdown: bool = False, socket_option: tuple[int, bytes] | None = None
    ) -> None:
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and socket_option is not None:
            sock.setsockopt(socket.SOL_SOCKET, *socket_option)
        if sock is not None and shutdown:
            with sock.dup() as duplicate:  # uvloop's socket object offers no shutdown()
                duplicate.shutdown(socket.SHUT_WR)
        # closes the socket with input unread: the kernel sends RST (uvloop's transports
        # are no asyncio.WriteTransport, but abort() all the same)
        cast(asyncio.WriteTransport, transport).abort()

    async def smtp_EHLO(self, hostname: str) -> None:
        await self.owner._delay("EHLO")
        await super().smtp_EHLO(hostname)


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


_BODIES = "bodies"
_ENVELOPES = "envelopes"


class _Journal:
    """`--journal`: every body appended to one file, then its envelope as one line of
    another (the line is written last, in one write(): a complete line is a complete
    message, even if the server is killed between the two)."""

    def __init__(self, directory: Path) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._bodies = os.open(directory / _BODIES, flags, 0o644)
        self._envelopes = os.open(directory / _ENVELOPES, flags, 0o644)
        self._offset = os.fstat(self._bodies).st_size

    def append(self, received: Received) -> None:
        offset, self._offset = self._offset, self._offset + len(received.data)
        _write_all(self._bodies, received.data)
        line = {
            "mail_from": received.mail_from,
            "rcpt_tos": received.rcpt_tos,
            "offset": offset,
            "length": len(received.data),
        }
        _write_all(self._envelopes, json.dumps(line).encode() + b"\n")

    def close(self) -> None:
        os.close(self._bodies)
        os.close(self._envelopes)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _complete_lines(path: Path) -> list[bytes]:
    """The lines of a journal file that are complete (a line being written is left out)."""
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        return []
    return content[: content.rfind(b"\n") + 1].splitlines()


def load_recorded(directory: Path) -> list[Received]:
    """The complete messages a `--record-dir` server wrote, in arrival order."""
    if (directory / _ENVELOPES).exists():
        bodies = (directory / _BODIES).read_bytes()
        journalled = []
        for line in _complete_lines(directory / _ENVELOPES):
            envelope = json.loads(line)
            start = envelope["offset"]
            data = bodies[start : start + envelope["length"]]
            journalled.append(Received(envelope["mail_from"], envelope["rcpt_tos"], data))
        return journalled
    received = []
    for meta in sorted(directory.glob("*.json")):
        envelope = json.loads(meta.read_text())
        data = meta.with_suffix(".eml").read_bytes()
        received.append(Received(envelope["mail_from"], envelope["rcpt_tos"], data))
    return received


class SmtpServerProcess:
    """The server in a child process (`python tests/smtp_server.py ...`)."""

    def __init__(self, record_dir: Path, *, delay_end: float = 0.0, journal: bool = False) -> None:
        self.record_dir = record_dir
        self.delay_end = delay_end
        self.journal = journal  # --journal: see the module docstring
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._counted = (0, 0)  # (bytes of the envelopes file read, complete lines in them)

    def start(self, timeout: float = 15.0) -> int:
        self.record_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.record_dir / ".port"
        port_file.unlink(missing_ok=True)
        command = [sys.executable, __file__, "--port-file", str(port_file)]
        command += ["--record-dir", str(self.record_dir), "--delay-end", str(self.delay_end)]
        if self.journal:
            command.append("--journal")
        self._process = subprocess.Popen(command)
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the SMTP test server process did not start")
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        return self.port

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(timeout=10)

    @property
    def messages(self) -> list[Received]:
        return load_recorded(self.record_dir)

    def recipients(self) -> list[str]:
        """Every recipient of every complete message, in arrival order (the envelopes
        alone: the bodies of a large run are not read back)."""
        if self.journal:
            lines = _complete_lines(self.record_dir / _ENVELOPES)
            return [rcpt for line in lines for rcpt in json.loads(line)["rcpt_tos"]]
        return [
            rcpt
            for meta in sorted(self.record_dir.glob("*.json"))
            for rcpt in json.loads(meta.read_text())["rcpt_tos"]
        ]

    def count(self) -> int:
        """How many complete messages the server has recorded so far. With --journal, only
        what was appended since the last call is read, so polling it stays cheap."""
        if not self.journal:
            return sum(1 for _ in self.record_dir.glob("*.json"))
        read, lines = self._counted
        try:
            with (self.record_dir / _ENVELOPES).open("rb") as envelopes:
                envelopes.seek(read)
                new = envelopes.read()
        except FileNotFoundError:
            return 0
        complete = new[: new.rfind(b"\n") + 1]
        self._counted = (read + len(complete), lines + complete.count(b"\n"))
        return self._counted[1]

    def __enter__(self) -> SmtpServerProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- pytest fixtures ------------------------------------------------------------------


@pytest.fixture
async def smtp_server() -> AsyncIterator[SmtpTestServer]:
    """A plain SMTP server on the test's event loop."""
    async with SmtpTestServer() as server:
        yield server


@pytest.fixture
def smtp_server_thread() -> Iterator[SmtpTestServer]:
    """A plain SMTP server on a background thread, for synchronous tests."""
    with SmtpTestServer() as server:
        yield server


@pytest.fixture
def smtp_server_process(tmp_path: Path) -> Iterator[SmtpServerProcess]:
    """The server as a child process recording into tmp_path / "received"."""
    with SmtpServerProcess(tmp_path / "received") as process:
        yield process


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A trustme CA (`.ca_file`) and a server certificate for 127.0.0.1 and localhost."""
    return TlsFiles.create(tmp_path_factory.mktemp("tls"))


# -- as a script ----------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    server = SmtpTestServer(
        host=args.host, port=args.port, record_dir=args.record_dir, journal=args.journal
    )
    if args.delay_end:
        server.delays["END"] = args.delay_end
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        if args.port_file is not None:
            # Written atomically so the parent never reads a half-written number.
            with tempfile.NamedTemporaryFile("w", dir=args.port_file.parent, delete=False) as f:
                f.write(str(server.port))
            os.replace(f.name, args.port_file)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="SMTP test server (records every message).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path)
    parser.add_argument("--record-dir", type=Path)
    parser.add_argument("--delay-end", type=float, default=0.0, help="seconds before 250")
    parser.add_argument(
        "--journal", action="store_true", help="append to two files instead of two per message"
    )
    args = parser.parse_args(argv)
    if args.record_dir is not None:
        args.record_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
