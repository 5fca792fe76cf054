"""The short "add to calendar" link: BASE/c/TOKEN.ics, served by `mailer serve`.

The token names a campaign and nothing else; the route rebuilds that campaign's .ics
from its event file, with the UID of the mailed invite, changes nothing, and answers a
plain 404 to anything it cannot serve. Run on real SQLite and PostgreSQL stores.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import icalendar
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.errors import TokenError
from mailer.message.compose import InvitationBuilder
from mailer.message.event import load_event
from mailer.models import CampaignStatus
from mailer.store import Store
from mailer.store.keyring import KEY_REFRESH_INTERVAL, StoreKeySigner, load_keyring
from mailer.store.signer import load_signer
from mailer.tokens import TokenSigner, calendar_url
from mailer.web import create_app
from test_compose import EXAMPLE, TEMPLATES
from test_signing_keys import KEY_A, KEY_B, settings_for
from test_web import KEY, make_settings, seed, serving
from web_support import store_snapshot

SITE = "https://lists.example.org"  # make_settings' MAILER_BASE_URL


# -- the token ------------------------------------------------------------------------------


@given(campaign_id=st.integers(min_value=0, max_value=2**63 - 1))
def test_calendar_token_round_trip(campaign_id: int) -> None:
    """verify_calendar(sign_calendar(id)) is the id; the token is URL-safe."""
    signer = TokenSigner(KEY)
    token = signer.sign_calendar(campaign_id=campaign_id)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert signer.verify_calendar(token) == campaign_id


def test_calendar_link_is_short() -> None:
    """A campaign's link is a few dozen characters, not the 434 of Google's."""
    url = calendar_url(SITE, TokenSigner(KEY).sign_calendar(campaign_id=12_345))
    assert url.startswith(f"{SITE}/c/")
    assert url.endswith(".ics")
    assert len(url) < 70


def test_calendar_and_unsubscribe_tokens_never_stand_in_for_each_other() -> None:
    """Each kind is signed under its own HMAC domain: neither verifies as the other,
    and a calendar token signed with another key, or tampered with, is refused."""
    signer = TokenSigner(KEY, fallbacks=[b"an-older-key-kept-as-fallback-0123"])
    calendar = signer.sign_calendar(campaign_id=7)
    with pytest.raises(TokenError):
        signer.verify_link(calendar)
    for other in (
        signer.sign(subscriber_id=7, list_id=7, campaign_id=7),
        signer.sign_test_message(list_id=7),
        TokenSigner(b"someone-elses-key-0123456789").sign_calendar(campaign_id=7),
        calendar[:-1] + ("A" if calendar[-1] != "A" else "B"),
        calendar[:-2],
        "",
    ):
        with pytest.raises(TokenError):
            signer.verify_calendar(other)
    old = TokenSigner(b"an-older-key-kept-as-fallback-0123").sign_calendar(campaign_id=9)
    assert signer.verify_calendar(old) == 9


def test_a_running_server_learns_keys_for_calendar_links(
    tmp_path: Path, store: Store, database_url: str
) -> None:
    """A server started with key B serves a calendar link a later send signed with key A,
    once the key interval has passed (as for unsubscribe links)."""
    now = [100.0]
    settings_b = settings_for(tmp_path, database_url, secret_key=KEY_B)
    server = StoreKeySigner(load_keyring(settings_b, store), store=store, clock=lambda: now[0])
    sender = load_signer(settings_for(tmp_path, database_url, secret_key=KEY_A), store=store)
    token = sender.sign_calendar(campaign_id=3)
    with pytest.raises(TokenError):
        server.verify_calendar(token)
    now[0] += KEY_REFRESH_INTERVAL
    assert server.verify_calendar(token) == 3


# -- the route ------------------------------------------------------------------------------


def make_campaign(store: Store, event_path: Path) -> int:
    seed(store, 1)
    event = load_event(event_path)
    return store.create_campaign(
        event_path=str(event_path),
        event_slug=event.slug,
        list_id=store.list_id("members"),
        subject=event.subject,
        status=CampaignStatus.FINISHED,
    )


def client_for(store: Store, signer: TokenSigner) -> httpx.AsyncClient:
    app = create_app(store=store, signer=signer, settings=make_settings())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=SITE)


def ics_path(token: str) -> str:
    return calendar_url("", token)


async def test_the_link_serves_the_invite_that_was_mailed_and_changes_nothing(
    tmp_path: Path, store: Store
) -> None:
    """GET (and HEAD) answer the campaign's .ics with the mailed invite's UID, as a
    download; the store is the same before and after."""
    event_path = tmp_path / EXAMPLE.name
    shutil.copy(EXAMPLE, event_path)
    campaign_id = make_campaign(store, event_path)
    signer = TokenSigner(KEY)
    token = signer.sign_calendar(campaign_id=campaign_id)
    settings = make_settings()
    mailed = InvitationBuilder(
        load_event(event_path),
        sender=settings.sender_identity,
        campaign_id=campaign_id,
        list_name="members",
        templates_dir=TEMPLATES,
        ics_url=calendar_url(SITE, token),
    ).ics
    before = store_snapshot(store)
    async with client_for(store, signer) as client:
        response = await client.get(ics_path(token))
        head = await client.head(ics_path(token))
    assert response.status_code == 200
    assert head.status_code == 200
    assert response.headers["content-type"].startswith("text/calendar")
    assert response.headers["content-disposition"] == 'attachment; filename="invite.ics"'
    served = icalendar.Calendar.from_ical(response.content)
    assert served["METHOD"] == "PUBLISH"
    [served_event] = served.walk("VEVENT")
    [mailed_event] = icalendar.Calendar.from_ical(mailed).walk("VEVENT")
    for name in ("UID", "SEQUENCE", "DTSTART", "DTEND", "SUMMARY", "LOCATION", "DESCRIPTION"):
        assert served_event[name] == mailed_event[name], name
    assert b"DTSTART;TZID=Europe/London:20210911T143000\r\n" in response.content
    assert store_snapshot(store) == before


async def test_the_link_follows_a_corrected_event_file(tmp_path: Path, store: Store) -> None:
    """The .ics is rebuilt from the event file: a corrected time shows at once."""
    event_path = tmp_path / EXAMPLE.name
    shutil.copy(EXAMPLE, event_path)
    signer = TokenSigner(KEY)
    token = signer.sign_calendar(campaign_id=make_campaign(store, event_path))
    source = event_path.read_text(encoding="utf-8")
    assert "starts_at: 2021-09-11T14:30" in source
    event_path.write_text(source.replace("T14:30", "T15:00"), encoding="utf-8")
    async with client_for(store, signer) as client:
        response = await client.get(ics_path(token))
    assert response.status_code == 200
    assert b"DTSTART;TZID=Europe/London:20210911T150000\r\n" in response.content


async def test_bad_links_get_a_plain_404_and_change_nothing(tmp_path: Path, store: Store) -> None:
    """Made up, tampered, another key's, an unsubscribe token, a campaign that does not
    exist, a campaign whose event file is gone: 404, nothing changed. POST: 405."""
    kept = tmp_path / "kept.md"
    gone = tmp_path / "gone.md"
    shutil.copy(EXAMPLE, kept)
    shutil.copy(EXAMPLE, gone)
    signer = TokenSigner(KEY)
    live = signer.sign_calendar(campaign_id=make_campaign(store, kept))
    orphan = signer.sign_calendar(campaign_id=make_campaign(store, gone))
    gone.unlink()
    tokens = [
        "garbage",
        live[:-1] + ("A" if live[-1] != "A" else "B"),
        TokenSigner(b"someone-elses-key-0123456789").sign_calendar(campaign_id=1),
        signer.sign(subscriber_id=1, list_id=store.list_id("members")),
        signer.sign_calendar(campaign_id=999_999),
        orphan,
    ]
    before = store_snapshot(store)
    async with client_for(store, signer) as client:
        for token in tokens:
            response = await client.get(ics_path(token))
            assert response.status_code == 404, token
            assert not response.headers["content-type"].startswith("text/calendar")
        assert (await client.get(f"/c/{live}")).status_code == 404  # the .ics is the URL
        assert (await client.post(ics_path(live))).status_code == 405
        assert (await client.get(ics_path(live))).status_code == 200
    assert store_snapshot(store) == before


def test_mailer_serve_answers_the_link(tmp_path: Path, sqlite_url: str) -> None:
    """The route is in the app `mailer serve` runs (as a subprocess, as organisers run it)."""
    event_path = tmp_path / EXAMPLE.name
    shutil.copy(EXAMPLE, event_path)
    store = Store.open(sqlite_url)
    token = TokenSigner(KEY).sign_calendar(campaign_id=make_campaign(store, event_path))
    store.close()
    with serving(tmp_path, sqlite_url) as (base, _), httpx.Client(base_url=base) as client:
        response = client.get(ics_path(token))
        missing = client.get(ics_path(TokenSigner(KEY).sign_calendar(campaign_id=999)))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/calendar")
    assert b"DTSTART;TZID=Europe/London:20210911T143000\r\n" in response.content
    assert missing.status_code == 404
