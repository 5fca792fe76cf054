"""SEQUENCE across campaigns of one event: a corrected time raises it, so calendars update
the entry they have; a resend of the same facts keeps it. The short .ics link in the
text part serves the same SEQUENCE."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import httpx

from campaign_support import EVENT, make_settings, seed_list, send
from mailer.campaigns import lifecycle
from mailer.message.event import load_event
from mailer.store import Store
from mailer.store.signer import load_signer
from mailer.web import create_app
from smtp_server import SmtpTestServer


def ics_of(data: bytes) -> str:
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    for part in message.walk():
        if part.get_content_type() == "text/calendar":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode()
    raise AssertionError("no calendar part")


def ics_field(data: bytes, name: str) -> str:
    found = re.search(rf"\r\n{name}:(\S+)\r\n", ics_of(data))
    assert found is not None, f"no {name} in the invite"
    return found.group(1)


def text_of(data: bytes) -> str:
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


async def campaign_of(store: Store, event_file: Path, settings_dir: Path, port: int) -> None:
    event = load_event(event_file)
    choice = lifecycle.start_or_resume(
        store, event_path=event_file, event=event, list_name="members", new=True
    )
    await send(make_settings(settings_dir, port), store, choice.campaign.id)


async def test_a_changed_time_raises_sequence_and_a_resend_keeps_it(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    seed_list(store, tmp_path, 1)
    event_file = tmp_path / "events" / "meeting.md"
    event_file.parent.mkdir()
    original = EVENT.read_text(encoding="utf-8")
    event_file.write_text(original, encoding="utf-8")
    await campaign_of(store, event_file, tmp_path, smtp_server.port)
    await campaign_of(store, event_file, tmp_path, smtp_server.port)  # the same facts again
    moved = original.replace("starts_at: 2021-09-11T14:30", "starts_at: 2021-09-11T15:00")
    assert moved != original
    event_file.write_text(moved, encoding="utf-8")
    await campaign_of(store, event_file, tmp_path, smtp_server.port)
    sequences = [int(ics_field(m.data, "SEQUENCE")) for m in smtp_server.messages]
    assert sequences == [0, 0, 1]
    uids = {ics_field(m.data, "UID") for m in smtp_server.messages}
    assert len(uids) == 1  # one calendar entry, updated

    # The text part offers the short link; it serves the same SEQUENCE as the mail.
    text = text_of(smtp_server.messages[-1].data)
    (link,) = re.findall(r"https://mailer\.example\.org/c/\S+\.ics", text)
    assert len(link) < 100
    settings = make_settings(tmp_path, smtp_server.port)
    app = create_app(store=store, signer=load_signer(settings, store=store), settings=settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=settings.base_url
    ) as client:
        served = await client.get(link.removeprefix(settings.base_url))
    assert served.status_code == 200
    assert "\r\nSEQUENCE:1\r\n" in served.text
