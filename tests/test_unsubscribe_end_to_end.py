"""The whole unsubscribe loop: a received message's List-Unsubscribe URL, a one-click POST
as a mail client makes it, and the next send of the same event skipping that person; and
the link of a test message (`mailer send --test-to`), which unsubscribes nobody."""

from __future__ import annotations

from email import message_from_bytes, policy
from pathlib import Path

import httpx
from sqlalchemy import select

from campaign_support import EVENT, cli_environment, make_settings, run_mailer, seed_list, send
from mailer.campaigns.lifecycle import start_or_resume
from mailer.message.event import load_event
from mailer.store import Store
from mailer.store.schema import suppressions
from mailer.store.signer import load_signer
from mailer.web import create_app
from mailer.web.rendering import mask_email
from smtp_server import SmtpTestServer
from web_support import store_snapshot


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
    second = start_or_resume(
        sqlite_store, event_path=EVENT, event=event, list_name="members", new=True
    )
    assert second.campaign.id != first.campaign.id  # the first one finished: a new campaign
    result = await send(settings, sqlite_store, second.campaign.id)
    assert result.counts.sent == 7
    assert sorted(smtp_server.recipients) == sorted(a for a in addresses if a != leaver)


def one_click_url(data: bytes) -> str:
    """The https URI of a received message's List-Unsubscribe header."""
    message = message_from_bytes(data, policy=policy.default)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    return next(
        part.strip(" <>")
        for part in str(message["List-Unsubscribe"]).split(",")
        if part.strip(" <>").startswith("https://")
    )


async def test_a_test_message_link_unsubscribes_nobody(
    tmp_path: Path, smtp_server_thread: SmtpTestServer
) -> None:
    """Issue 9: `--test-to` carried the list's first member's own link; one click on the
    test message unsubscribed her and showed her masked address. Now the test message's
    link (received over SMTP) opens a page saying it was a test, and neither GET nor the
    one-click POST changes anything in the store."""
    settings = make_settings(tmp_path, smtp_server_thread.port)
    with Store.open(settings.database_url) as store:
        addresses = seed_list(store, tmp_path, 3)
    env = cli_environment(tmp_path, smtp_server_thread.port, MAILER_BASE_URL=settings.base_url)
    sent = run_mailer(
        env, tmp_path, "send", str(EVENT), "--list", "members", "--test-to", "organiser@example.org"
    )
    assert sent.returncode == 0, sent.stderr
    (received,) = smtp_server_thread.messages
    assert received.rcpt_tos == ["organiser@example.org"]
    assert b"Subject: [TEST] " in received.data
    url = one_click_url(received.data)

    with Store.open(settings.database_url) as store:
        signer = load_signer(settings)
        list_id = store.list_id("members")
        sample = store.get_subscriber_id(addresses[0])
        before = store_snapshot(store)
        app = create_app(store=store, signer=signer, settings=settings)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=settings.base_url
        ) as client:
            path = url.removeprefix(settings.base_url)
            page = await client.get(path)
            one_click = await client.post(
                path,
                content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        for response in (page, one_click):
            assert response.status_code == 200
            assert "This link came from a test message" in response.text
            assert mask_email(addresses[0]) not in response.text
        assert store_snapshot(store) == before
        assert all(store.is_mailable(store.get_subscriber_id(a), list_id) for a in addresses)
        # Her own link appears nowhere in the test message.
        assert signer.sign(subscriber_id=sample, list_id=list_id).encode() not in received.data
