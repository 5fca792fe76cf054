"""The whole unsubscribe loop: a received message's List-Unsubscribe URL, a one-click POST
as a mail client makes it, and the next send of the same event skipping that person."""

from __future__ import annotations

from email import message_from_bytes, policy
from pathlib import Path

import httpx
from sqlalchemy import select

from campaign_support import EVENT, make_settings, seed_list, send
from mailer.campaigns.actions import start_or_resume
from mailer.message.event import load_event
from mailer.store import Store
from mailer.store.schema import suppressions
from mailer.tokens import load_signer
from mailer.web import create_app
from smtp_server import SmtpTestServer


async def test_one_click_from_a_received_header_removes_them_from_the_next_send(
    sqlite_store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    addresses = seed_list(sqlite_store, tmp_path, 8)
    settings = make_settings(tmp_path, smtp_server.port)
    event = load_event(EVENT)
    first = start_or_resume(sqlite_store, event_path=EVENT, event=event, list_name="members")
    await send(settings, sqlite_store, first.campaign.id)
    leaver = "person00005@example.org"
    (received,) = [m for m in smtp_server.messages if m.rcpt_tos == [leaver]]
    message = message_from_bytes(received.data, policy=policy.default)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https_url = next(
        part.strip(" <>")
        for part in str(message["List-Unsubscribe"]).split(",")
        if part.strip(" <>").startswith("https://")
    )
    path = https_url.removeprefix(settings.base_url)

    app = create_app(store=sqlite_store, signer=load_signer(settings), settings=settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=settings.base_url
    ) as client:
        # What Gmail's "Unsubscribe" button sends (RFC 8058 section 3.2): no cookie, no login.
        response = await client.post(
            path,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 200

    with sqlite_store.engine.connect() as connection:
        rows = connection.execute(
            select(suppressions.c.email_key, suppressions.c.source, suppressions.c.campaign_id)
        ).all()
    assert rows == [(leaver, "one-click", first.campaign.id)]

    smtp_server.messages.clear()
    second = start_or_resume(sqlite_store, event_path=EVENT, event=event, list_name="members")
    assert second.campaign.id != first.campaign.id  # the first one finished: a new campaign
    result = await send(settings, sqlite_store, second.campaign.id)
    assert result.counts.sent == 7
    assert sorted(smtp_server.recipients) == sorted(a for a in addresses if a != leaver)
