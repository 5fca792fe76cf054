"""A local SMTP catcher: accepts every message on loopback and saves it as an .eml file.

Used by `mailer catcher` and, in-process on a free port, by `mailer demo`:

    async with Catcher(outbox, port=0) as catcher:
        ...  # send to 127.0.0.1:catcher.port
    catcher.received  # how many messages were saved

Each message is written to a hidden temporary file in the outbox and renamed into place,
so a reader never sees half a message. Names sort in arrival order and never collide:
`20250101T120000.123456Z-00000001-4242.eml` (UTC time, per-catcher sequence, process id).
Return-Path and X-Original-To are prepended, as a local delivery agent would, so the
envelope is not lost; the bytes that follow are exactly what the client sent.

Writes are synchronous and not fsynced (a development tool, not a mail store). Measured
here on ext4: one save of a 4 KB message costs 35-65 us, a tenth of aiosmtpd's own work
per message; handing each write to a thread measured slower (0.59-0.69 of a bare aiosmtpd
sink, against 0.76-0.79 inline, client and server sharing one process and two cores).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["Catcher"]

HOSTNAME = "mailer-catcher"


class Catcher:
    """An aiosmtpd server on the running event loop that saves what it receives."""

    def __init__(
        self,
        outbox: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_message: Callable[[Path], None] | None = None,
    ) -> None:
        self.outbox = Path(outbox)
        self.host = host
        self.port = port
        self.received = 0
        self._on_message = on_message
        self._sequence = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._sessions: set[SMTP] = set()

    async def start(self) -> int:
        """Start listening; returns the port (the one chosen by the OS when `port` was 0)."""
        if self._server is not None:
            raise RuntimeError("the catcher is already running")
        self.outbox.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_session, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop listening and close every open session."""
        server, self._server = self._server, None
        if server is None:
            return
        await close_server(server, list(self._sessions))

    async def __aenter__(self) -> Catcher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _new_session(self) -> SMTP:
        session = _Session(
            self,
            hostname=HOSTNAME,
            enable_SMTPUTF8=True,
            loop=asyncio.get_running_loop(),
        )
        self._sessions.add(session)
        return session

    # -- aiosmtpd handler hook --------------------------------------------------------

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        path = self._save(envelope)
        self.received += 1
        if self._on_message is not None:
            self._on_message(path)
        return "250 2.0.0 Saved"

    def _save(self, envelope: Envelope) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        name = f"{stamp}-{next(self._sequence):08d}-{os.getpid()}.eml"
        envelope_lines = [f"Return-Path: <{envelope.mail_from}>"]
        envelope_lines += [f"X-Original-To: {rcpt}" for rcpt in envelope.rcpt_tos]
        head = ("\r\n".join(envelope_lines) + "\r\n").encode("utf-8", "surrogateescape")
        content = envelope.original_content or b""
        final = self.outbox / name
        temporary = self.outbox / f".{name}.tmp"  # hidden: `*.eml` globs never see it
        with open(temporary, "wb") as file:
            file.write(head)
            file.write(content)
        os.replace(temporary, final)
        return final


class _Session(SMTP):
    """One client connection; forgets itself in the catcher when the connection ends."""

    def __init__(self, catcher: Catcher, **options: Any) -> None:
        super().__init__(catcher, **options)
        self._catcher = catcher

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self._catcher._sessions.discard(self)


async def close_server(server: asyncio.Server, sessions: Sequence[SMTP]) -> None:
    """Stop an aiosmtpd server and every session it has open, leaving nothing pending.

    Python 3.11's wait_closed() does not wait for open connections, and a session
    mid-command (or after a failed TLS handshake, which never reaches connection_lost)
    would wait for ever: close their transports and cancel their handler tasks first."""
    server.close()
    for session in sessions:
        if session.transport is not None:
            session.transport.close()
    tasks = [s._handler_coroutine for s in sessions if s._handler_coroutine is not None]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await server.wait_closed()
