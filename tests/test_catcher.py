"""The local catcher: every message saved whole as an .eml file, in arrival order."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mailer.config import SmtpSecurity
from mailer.delivery.catcher import Catcher
from mailer.delivery.smtp import SmtpTransport
from mailer.models import DeliveryStatus, OutgoingMessage

BODY = b"From: a@mailer.test\r\nTo: b@example.org\r\nSubject: Hi\r\n\r\n.leading dot\r\nbye\r\n"


def message(recipient: str) -> OutgoingMessage:
    return OutgoingMessage("a@mailer.test", recipient, f"<{recipient}>", BODY)


def client(port: int, connections: int = 1) -> SmtpTransport:
    return SmtpTransport(
        host="127.0.0.1",
        port=port,
        security=SmtpSecurity.NONE,
        connections=connections,
        local_hostname="client.test",
    )


async def test_each_message_becomes_one_eml_file_with_its_envelope(tmp_path: Path) -> None:
    """Three messages give three .eml files, named in arrival order, each holding
    Return-Path and X-Original-To followed by exactly the bytes sent; no temp files stay."""
    outbox = tmp_path / "outbox"
    saved: list[Path] = []
    async with Catcher(outbox, port=0, on_message=saved.append) as catcher:
        assert catcher.port > 0
        async with client(catcher.port) as smtp:
            for name in ("one", "two", "three"):
                outcome = await smtp.send(message(f"{name}@example.org"))
                assert outcome.status is DeliveryStatus.SENT
    assert catcher.received == 3
    files = sorted(outbox.iterdir())
    assert files == saved
    assert all(re.fullmatch(r"\d{8}T\d{6}\.\d{6}Z-\d{8}-\d+\.eml", f.name) for f in files)
    first = files[0].read_bytes()
    assert first == b"Return-Path: <a@mailer.test>\r\nX-Original-To: one@example.org\r\n" + BODY
    assert [f.read_bytes().split(b"\r\n")[1] for f in files] == [
        b"X-Original-To: one@example.org",
        b"X-Original-To: two@example.org",
        b"X-Original-To: three@example.org",
    ]


async def test_concurrent_senders_never_collide(tmp_path: Path) -> None:
    """300 messages over 8 connections: 300 distinct files, every recipient present once."""
    async with (
        Catcher(tmp_path, port=0) as catcher,
        client(catcher.port, connections=8) as smtp,
    ):
        await asyncio.gather(*(smtp.send(message(f"r{i}@example.org")) for i in range(300)))
    files = await asyncio.to_thread(lambda: list(tmp_path.glob("*.eml")))
    assert len(files) == catcher.received == 300
    recipients = {f.read_bytes().split(b"\r\n")[1] for f in files}
    assert len(recipients) == 300


async def test_stop_closes_open_sessions_and_frees_the_port(tmp_path: Path) -> None:
    """Stopping with a client still connected ends its session; the catcher cannot be
    started twice, and stop() is idempotent."""
    catcher = Catcher(tmp_path, port=0)
    port = await catcher.start()
    with pytest.raises(RuntimeError):
        await catcher.start()
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.sleep(0.05)
    await catcher.stop()
    await catcher.stop()
    writer.close()
    await writer.wait_closed()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


def test_the_cli_catches_until_sigterm_and_reports(tmp_path: Path) -> None:
    """`mailer catcher --port 0 --outbox DIR` prints its address, saves a message, and on
    SIGTERM stops cleanly with exit status 0 and a count."""
    outbox = tmp_path / "outbox"
    env = {**os.environ, "COLUMNS": "500", "MAILER_VAR_DIR": str(tmp_path / "var")}
    command = [sys.executable, "-m", "mailer", "catcher", "--port", "0", "--outbox", str(outbox)]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path
    ) as process:
        assert process.stdout is not None
        banner = process.stdout.readline().decode()
        found = re.search(r"127\.0\.0\.1:(\d+)", banner)
        assert found, banner
        outcome = asyncio.run(_send_one(int(found.group(1))))
        assert outcome is DeliveryStatus.SENT
        saved_line = process.stdout.readline().decode()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err.decode()
    assert "saved" in saved_line
    assert "Stopped. 1 message(s) saved" in out.decode()
    assert len(list(outbox.glob("*.eml"))) == 1


async def _send_one(port: int) -> DeliveryStatus:
    async with client(port) as smtp:
        return (await smtp.send(message("cli@example.org"))).status
