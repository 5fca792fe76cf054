"""The unsubscribe web app, in process (httpx over ASGI), against real SQLite and PostgreSQL.

Every store-touching test checks what the store holds afterwards: membership status,
suppression rows (source, campaign), and is_mailable, which the sender re-checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, select

from admin_support import FAST_PASSWORDS
from mailer.assets import BUILTIN_WEB
from mailer.config import Settings
from mailer.models import Subscriber, SubscriberStatus, UnsubscribeSource
from mailer.store import Store
from mailer.store.imports import ImportRow
from mailer.store.schema import memberships, suppressions
from mailer.tokens import TokenSigner
from mailer.web import create_app
from mailer.web.throttle import ClientRateLimiter
from web_support import store_snapshot

REPO_ROOT = Path(__file__).resolve().parent.parent
KEY = b"test-key-for-the-web-app-0123456789"
OLD_KEY = b"an-older-key-kept-as-fallback-0123"
ORGANISATION = "Leeds Tenants Union"
ONE_CLICK = "List-Unsubscribe=One-Click"
INVALID = "This link is not valid"


def make_settings() -> Settings:
    return Settings(
        from_name=ORGANISATION,
        secret_key=SecretStr(KEY.decode()),
        templates_dir=REPO_ROOT / "templates",
        base_url="https://lists.example.org",
    )


def seed(store: Store, count: int, list_name: str = "members") -> list[int]:
    """`count` subscribers on `list_name`; their ids in import order."""
    rows = (
        ImportRow(Subscriber(email=f"person{i}@example.org", name=f"Person {i}"))
        for i in range(count)
    )
    store.import_subscribers(list_name, rows, source="test")
    return [store.get_subscriber_id(f"person{i}@example.org") for i in range(count)]


def suppression_rows(store: Store) -> list[Any]:
    with store.engine.connect() as connection:
        return list(connection.execute(select(suppressions).order_by(suppressions.c.id)))


def membership_status(store: Store, subscriber_id: int, list_id: int) -> str:
    with store.engine.connect() as connection:
        return str(
            connection.execute(
                select(memberships.c.status).where(
                    memberships.c.subscriber_id == subscriber_id,
                    memberships.c.list_id == list_id,
                )
            ).scalar_one()
        )


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(KEY, fallbacks=[OLD_KEY])


def client_for(store: Store, signer: TokenSigner, **options: Any) -> httpx.AsyncClient:
    # The recipient pages use no password; the default hasher's start-up hash costs
    # 0.15 s an app, and this file makes one per test.
    options.setdefault("passwords", FAST_PASSWORDS)
    app = create_app(store=store, signer=signer, settings=make_settings(), **options)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://lists.example.org"
    )


@pytest.fixture
async def client(store: Store, signer: TokenSigner) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(store, signer) as opened:
        yield opened


# -- GET ------------------------------------------------------------------------------------


async def test_get_shows_the_page_and_changes_nothing(
    store: Store, signer: TokenSigner, client: httpx.AsyncClient
) -> None:
    """GET names the organisation and list, masks the address, offers a POST form; no effect."""
    (zoe,) = seed(store, 1)
    list_id = store.list_id("members")
    token = signer.sign(subscriber_id=zoe, list_id=list_id, campaign_id=4)
    for _ in range(3):  # a mail scanner may fetch the link several times
        response = await client.get(f"/u/{token}")
        assert response.status_code == 200
    page = response.text
    assert ORGANISATION in page
    assert "members" in page
    assert "p***@example.org" in page
    assert "person0@example.org" not in page
    assert f'<form method="post" action="/u/{token}">' in page
    assert '<html lang="en">' in page
    assert store.is_mailable(zoe, list_id)
    assert suppression_rows(store) == []
    assert membership_status(store, zoe, list_id) == SubscriberStatus.SUBSCRIBED


async def test_page_escapes_the_list_name(
    store: Store, signer: TokenSigner, client: httpx.AsyncClient
) -> None:
    (zoe,) = seed(store, 1, list_name="<b>Tenants</b> & friends")
    token = signer.sign(subscriber_id=zoe, list_id=store.list_id("<b>Tenants</b> & friends"))
    page = (await client.get(f"/u/{token}")).text
    assert "&lt;b&gt;Tenants&lt;/b&gt; &amp; friends" in page
    assert "<b>Tenants</b>" not in page


# -- POST -----------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
async def test_one_click_post_unsubscribes_at_once(
    store: Store, signer: TokenSigner, client: httpx.AsyncClient, encoding: str
) -> None:
    """RFC 8058 POST (either encoding): 200, no redirect, no cookie; recorded as one-click."""
    ana, bob = seed(store, 2)
    list_id = store.list_id("members")
    token = signer.sign(subscriber_id=ana, list_id=list_id, campaign_id=17)
    if encoding == "urlencoded":
        response = await client.post(
            f"/u/{token}",
            content=ONE_CLICK,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    else:
        response = await client.post(f"/u/{token}", files={"List-Unsubscribe": (None, "One-Click")})
        assert response.request.headers["content-type"].startswith("multipart/form-data")
    assert response.status_code == 200
    assert "location" not in response.headers
    assert "set-cookie" not in response.headers
    assert "You are unsubscribed" in response.text
    assert not store.is_mailable(ana, list_id)
    assert store.is_mailable(bob, list_id)
    assert membership_status(store, ana, list_id) == SubscriberStatus.UNSUBSCRIBED
    (row,) = suppression_rows(store)
    assert (row.list_id, row.source, row.campaign_id) == (list_id, "one-click", 17)
    assert row.created_at is not None
    assert row.lifted_at is None


async def test_page_form_post_is_recorded_as_page(
    store: Store, signer: TokenSigner, client: httpx.AsyncClient
) -> None:
    """The page's own form (an empty form body) unsubscribes with source=page."""
    (ana,) = seed(store, 1)
    list_id = store.list_id("members")
    token = signer.sign(subscriber_id=ana, list_id=list_id)
    response = await client.post(
        f"/u/{token}", content=b"", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 200
    (row,) = suppression_rows(store)
    assert (row.source, row.campaign_id) == (UnsubscribeSource.PAGE, None)
    assert not store.is_mailable(ana, list_id)


async def test_repeat_post_is_idempotent(
    store: Store, signer: TokenSigner, client: httpx.AsyncClient
) -> None:
    """A second (or tenth) POST answers 200 again and adds no second record."""
    (ana,) = seed(store, 1)
    list_id = store.list_id("members")
    token = signer.sign(subscriber_id=ana, list_id=list_id, campaign_id=2)
    statuses = [(await client.post(f"/u/{token}", content=ONE_CLICK)).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert len(suppression_rows(store)) == 1
    page = (await client.get(f"/u/{token}")).text
    assert "You are not subscribed to members" in page
    assert "Subscribe again" in page


async def test_resubscribe_undoes_a_mistaken_click(
    store: Store, signer: TokenSigner, client: httpx.AsyncClient
) -> None:
    """Resubscribe restores the membership and lifts (keeps) the suppression row."""
    (ana,) = seed(store, 1)
    list_id = store.list_id("members")
    token = signer.sign(subscriber_id=ana, list_id=list_id, campaign_id=5)
    confirmation = await client.post(f"/u/{token}")
    assert f'action="/u/{token}/resubscribe"' in confirmation.text
    response = await client.post(f"/u/{token}/resubscribe")
    assert response.status_code == 200
    assert "You are subscribed again" in response.text
    assert store.is_mailable(ana, list_id)
    assert membership_status(store, ana, list_id) == SubscriberStatus.SUBSCRIBED
    (row,) = suppression_rows(store)
    assert row.lifted_at is not None
    # And they can leave again: a new record, the old one kept as history.
    assert (await client.post(f"/u/{token}", content=ONE_CLICK)).status_code == 200
    assert not store.is_mailable(ana, list_id)
    assert [r.lifted_at is None for r in suppression_rows(store)] == [False, True]


async def test_unsubscribe_is_per_list(
    store: Store, signer: TokenSigner, client: httpx.AsyncClient
) -> None:
    (ana,) = seed(store, 1, list_name="members")
    seed(store, 1, list_name="newsletter")
    members, newsletter = store.list_id("members"), store.list_id("newsletter")
    token = signer.sign(subscriber_id=ana, list_id=members)
    assert (await client.post(f"/u/{token}", content=ONE_CLICK)).status_code == 200
    assert not store.is_mailable(ana, members)
    assert store.is_mailable(ana, newsletter)


# -- invalid tokens ---------------------------------------------------------------------------


async def test_bad_tokens_get_the_same_404_and_change_nothing(
    store: Store, signer: TokenSigner, client: httpx.AsyncClient
) -> None:
    """Tampered, truncated, other-key, garbage: one identical 404 page, nothing changed."""
    (ana,) = seed(store, 1)
    list_id = store.list_id("members")
    good = signer.sign(subscriber_id=ana, list_id=list_id)
    flipped = good[:5] + ("A" if good[5] != "A" else "B") + good[6:]
    bad_tokens = [
        flipped,
        good[:-2],
        TokenSigner(b"someone-elses-key-0123456789").sign(subscriber_id=ana, list_id=list_id),
        signer.sign(subscriber_id=ana + 1000, list_id=list_id),  # valid, no such subscriber
        signer.sign(subscriber_id=ana, list_id=list_id + 1000),  # valid, no such list
        "garbage",
    ]
    bodies = set()
    for token in bad_tokens:
        for method in ("GET", "POST"):
            response = await client.request(method, f"/u/{token}", content=ONE_CLICK)
            assert response.status_code == 404, (method, token)
            assert INVALID in response.text
            bodies.add(response.text)
        resubscribe = await client.post(f"/u/{token}/resubscribe")
        assert resubscribe.status_code == 404
        bodies.add(resubscribe.text)
    assert len(bodies) == 1  # nothing distinguishes "forged" from "no such person"
    assert (await client.get("/u/")).status_code == 404
    assert store.is_mailable(ana, list_id)
    assert suppression_rows(store) == []


async def test_erased_subscriber_gets_the_invalid_page(
    store: Store, signer: TokenSigner, client: httpx.AsyncClient
) -> None:
    (ana,) = seed(store, 1)
    token = signer.sign(subscriber_id=ana, list_id=store.list_id("members"))
    store.remove_subscriber("person0@example.org")
    for method in ("GET", "POST"):
        response = await client.request(method, f"/u/{token}", content=ONE_CLICK)
        assert response.status_code == 404
        assert INVALID in response.text


async def test_token_signed_with_a_rotated_key_still_works(
    store: Store, signer: TokenSigner, client: httpx.AsyncClient
) -> None:
    """Mail sent before a key rotation: its link still unsubscribes (old key as fallback)."""
    (ana,) = seed(store, 1)
    list_id = store.list_id("members")
    old_token = TokenSigner(OLD_KEY).sign(subscriber_id=ana, list_id=list_id, campaign_id=1)
    assert (await client.get(f"/u/{old_token}")).status_code == 200
    assert (await client.post(f"/u/{old_token}", content=ONE_CLICK)).status_code == 200
    assert not store.is_mailable(ana, list_id)
    # Without the fallback, the same link is just invalid.
    async with client_for(store, TokenSigner(KEY)) as strict:
        assert (await strict.get(f"/u/{old_token}")).status_code == 404


# -- load -----------------------------------------------------------------------------------


async def test_200_concurrent_posts_are_all_recorded(store: Store, signer: TokenSigner) -> None:
    """200 simultaneous one-click POSTs for different subscribers: 200 rows, none lost."""
    ids = seed(store, 200)
    list_id = store.list_id("members")
    async with client_for(store, signer, post_rate_per_minute=None) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    f"/u/{signer.sign(subscriber_id=i, list_id=list_id, campaign_id=3)}",
                    content=ONE_CLICK,
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
                for i in ids
            )
        )
    assert [r.status_code for r in responses] == [200] * 200
    rows = suppression_rows(store)
    assert len(rows) == 200
    assert {r.source for r in rows} == {"one-click"}
    assert store.count_subscribers("members") == 0
    assert all(membership_status(store, i, list_id) == "unsubscribed" for i in ids[::37])


# -- hardening ------------------------------------------------------------------------------


async def test_security_headers_on_every_kind_of_response(
    store: Store, signer: TokenSigner
) -> None:
    (ana,) = seed(store, 1)
    token = signer.sign(subscriber_id=ana, list_id=store.list_id("members"))
    async with client_for(store, signer, post_burst=1, post_rate_per_minute=0.01) as client:
        responses = [
            await client.get(f"/u/{token}"),
            await client.get("/u/nonsense"),
            await client.get("/static/style.css"),
            await client.put(f"/u/{token}"),
            await client.post(f"/u/{token}", content=ONE_CLICK),
            await client.post("/u/nonsense", content=ONE_CLICK),  # 404, its budget spent
            await client.post("/u/nonsense", content=ONE_CLICK),  # 429
            await client.post(f"/u/{token}/resubscribe", headers={"Origin": "https://x.example"}),
            await client.get("/healthz"),
        ]
    assert [r.status_code for r in responses] == [200, 404, 200, 405, 200, 404, 429, 403, 200]
    for response in responses:
        headers = response.headers
        csp = headers["content-security-policy"]
        for directive in (
            "default-src 'none'",
            "style-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ):
            assert directive in csp
        # strict-origin: no Referer ever carries the token (only our origin), and our own
        # form posts keep a real Origin (no-referrer would make it `null`).
        assert headers["referrer-policy"] == "strict-origin"
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
    assert responses[0].headers["cache-control"] == "no-store"
    assert responses[2].headers["content-type"].startswith("text/css")


async def test_oversized_body_is_refused_with_413(
    store: Store, signer: TokenSigner, client: httpx.AsyncClient
) -> None:
    (ana,) = seed(store, 1)
    list_id = store.list_id("members")
    token = signer.sign(subscriber_id=ana, list_id=list_id)
    response = await client.post(f"/u/{token}", content=b"x" * (16 * 1024 + 1))
    assert response.status_code == 413
    assert response.headers["x-frame-options"] == "DENY"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(20):
            yield b"y" * 1024

    assert (await client.post(f"/u/{token}", content=chunks())).status_code == 413
    assert store.is_mailable(ana, list_id)
    assert (await client.post(f"/u/{token}", content=b"z" * 16 * 1024)).status_code == 200


def addressed_client(app: Any, address: str) -> httpx.AsyncClient:
    """A client whose requests come from `address` (the ASGI scope's client)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(address, 1)), base_url="http://t"
    )


async def test_invalid_link_posts_get_429_per_client_and_valid_ones_never(
    store: Store, signer: TokenSigner
) -> None:
    """Past its budget, a client's POSTs with a made-up token get 429 + Retry-After; its
    POSTs with a real token still unsubscribe; another client's budget is its own."""
    ids = seed(store, 4)
    list_id = store.list_id("members")
    tokens = [signer.sign(subscriber_id=i, list_id=list_id) for i in ids]
    forged = TokenSigner(b"an-attackers-own-key-0123456789").sign(subscriber_id=1, list_id=1)
    app = create_app(
        store=store,
        signer=signer,
        settings=make_settings(),
        post_rate_per_minute=0.01,
        post_burst=2,
    )
    async with (
        addressed_client(app, "192.0.2.1") as noisy,
        addressed_client(app, "192.0.2.2") as quiet,
    ):
        statuses = [(await noisy.post(f"/u/{forged}")).status_code for _ in range(3)]
        assert statuses == [404, 404, 429]
        refused = await noisy.post(f"/u/{forged}/resubscribe")
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        # The same client's real one-clicks and page clicks: never refused.
        for token in tokens[:3]:
            response = await noisy.post(f"/u/{token}", content=ONE_CLICK)
            assert response.status_code == 200
        assert (await noisy.post(f"/u/{tokens[0]}/resubscribe")).status_code == 200
        assert (await noisy.get(f"/u/{forged}")).status_code == 404  # GET is not counted
        assert (await quiet.post(f"/u/{forged}")).status_code == 404
    assert [store.is_mailable(i, list_id) for i in ids] == [True, False, False, True]


async def test_a_flood_of_bad_posts_cannot_block_a_real_one_click(
    store: Store, signer: TokenSigner
) -> None:
    """Issue 9: after 456 refused POSTs from one address (a mailbox provider's relay, say),
    a real one-click from that address still answers 200 and unsubscribes."""
    (ana,) = seed(store, 1)
    list_id = store.list_id("members")
    token = signer.sign(subscriber_id=ana, list_id=list_id, campaign_id=9)
    app = create_app(
        store=store,
        signer=signer,
        settings=make_settings(),
        post_rate_per_minute=0.01,
        post_burst=5,
    )
    async with addressed_client(app, "203.0.113.7") as relay:
        flood = [(await relay.post(f"/u/x{n}", content=ONE_CLICK)).status_code for n in range(456)]
        assert flood.count(429) == 456 - 5
        response = await relay.post(
            f"/u/{token}",
            content=ONE_CLICK,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 200
    assert "You are unsubscribed" in response.text
    assert not store.is_mailable(ana, list_id)
    (row,) = suppression_rows(store)
    assert (row.source, row.campaign_id) == ("one-click", 9)


def test_rate_limiter_refills_and_stays_bounded() -> None:
    now = [0.0]
    limiter = ClientRateLimiter(per_minute=60, burst=2, max_clients=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]
    now[0] += 1.0
    assert limiter.take("a") == 0.0
    for client in "bcdef":
        limiter.take(client)
    assert len(limiter._buckets) == 3  # the least recently seen are forgotten


async def test_tokens_never_reach_the_logs(
    store: Store, signer: TokenSigner, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    (ana,) = seed(store, 1)
    token = signer.sign(subscriber_id=ana, list_id=store.list_id("members"))
    with caplog.at_level(logging.DEBUG):
        await client.get(f"/u/{token}")
        await client.post(f"/u/{token}?token={token}", content=ONE_CLICK)
        await client.post(f"/u/{token}/resubscribe")
        await client.get(f"/u/{token}x")
    # The app's records only: httpx (the test's client) logs the URLs it requested.
    server_log = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))
    )
    assert "method=POST path=/u/<redacted> status=200" in server_log
    assert "method=POST path=/u/<redacted>/resubscribe status=200" in server_log
    assert "method=GET path=/u/<redacted> status=404" in server_log
    assert token not in server_log


async def test_healthz_checks_the_database(
    store: Store, signer: TokenSigner, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    response = await client.get("/healthz")
    assert (response.status_code, response.text) == (200, "ok")
    broken = Store(create_engine(f"sqlite:///{tmp_path}/missing-dir/none.db"))
    async with client_for(broken, signer) as unhealthy:
        assert (await unhealthy.get("/healthz")).status_code == 503
    broken.close()


async def test_database_failure_is_a_503_page_with_headers(
    signer: TokenSigner, tmp_path: Path
) -> None:
    """If the database is down, the person sees "try again", not a stack trace."""
    broken = Store(create_engine(f"sqlite:///{tmp_path}/missing-dir/none.db"))
    token = signer.sign(subscriber_id=1, list_id=1)
    app = create_app(store=broken, signer=signer, settings=make_settings())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post(f"/u/{token}", content=ONE_CLICK)
    broken.close()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "60"
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert "try the link again later" in response.text


# -- trailing slash --------------------------------------------------------------------------


async def test_trailing_slash_is_the_same_page_and_never_a_redirect(
    store: Store, signer: TokenSigner, client: httpx.AsyncClient
) -> None:
    """Issue 9: `POST /u/TOKEN/` answered 307 to `http://<Host header>/u/TOKEN`. Now every
    path with a trailing slash answers as without it: no Location, whatever the Host."""
    (ana,) = seed(store, 1)
    list_id = store.list_id("members")
    token = signer.sign(subscriber_id=ana, list_id=list_id, campaign_id=3)
    evil = {"Host": "evil.example"}
    page = await client.get(f"/u/{token}/", headers=evil)
    assert (page.status_code, page.headers.get("location")) == (200, None)
    assert "Unsubscribe from members?" in page.text
    assert store.is_mailable(ana, list_id)
    posted = await client.post(f"/u/{token}/", content=ONE_CLICK, headers=evil)
    assert (posted.status_code, posted.headers.get("location")) == (200, None)
    assert "You are unsubscribed" in posted.text
    assert "evil.example" not in posted.text
    assert not store.is_mailable(ana, list_id)
    back = await client.post(f"/u/{token}/resubscribe/", headers=evil)
    assert (back.status_code, back.headers.get("location")) == (200, None)
    assert store.is_mailable(ana, list_id)
    for path in ("/healthz/", "/static/style.css/", "/u/", "/u//"):
        response = await client.get(path, headers=evil)
        assert "location" not in response.headers, path
        assert response.status_code in (200, 404), path


# -- where form posts come from ----------------------------------------------------------------

SITE = "https://lists.example.org"  # make_settings' MAILER_BASE_URL


def on_both_stores_once(cases: list[dict[str, str]]) -> list[Any]:
    """(database_url, headers) for `database_url`'s indirect parametrization: each case on
    SQLite, the first on PostgreSQL too. The headers are the web layer's to judge; what
    the store does with a refused or an accepted resubscribe is the same SQL every time."""
    return [
        *(pytest.param("sqlite", case, id=f"sqlite-{i}") for i, case in enumerate(cases)),
        pytest.param("postgres", cases[0], id="postgres-0", marks=pytest.mark.postgres),
    ]


CROSS_SITE = [
    {"Origin": "https://evil.example"},
    {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site", "Origin": "https://other.example.org"},
    {"Sec-Fetch-Site": "same-site"},
    {"Origin": "null"},  # a sandboxed frame, or a cross-site redirect
    {"Origin": "http://lists.example.org"},  # same host, other scheme: another origin
    {"Origin": "https://lists.example.org:8443"},
    {"Sec-Fetch-Site": "same-origin", "Origin": "https://evil.example"},
]
SAME_ORIGIN = [
    {"Origin": SITE, "Sec-Fetch-Site": "same-origin"},  # a current browser, our page
    {"Origin": "HTTPS://Lists.Example.org:443"},  # the same origin, spelled otherwise
    {"Sec-Fetch-Site": "same-origin"},
    {"Origin": SITE},  # a browser without Fetch metadata (Safari before 16.4)
    {},  # no browser at all, or one too old to send either: nothing to forge
]


@pytest.mark.parametrize(
    ("database_url", "headers"), on_both_stores_once(CROSS_SITE), indirect=["database_url"]
)
async def test_cross_site_resubscribe_is_refused(
    store: Store, signer: TokenSigner, client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    """Issue 9: a form on another site (holding someone's link) put them back on the list.
    Now any Origin or Sec-Fetch-Site naming another origin gets 403 and changes nothing."""
    (ana,) = seed(store, 1)
    list_id = store.list_id("members")
    token = signer.sign(subscriber_id=ana, list_id=list_id)
    assert (await client.post(f"/u/{token}", content=ONE_CLICK)).status_code == 200
    before = store_snapshot(store)
    response = await client.post(f"/u/{token}/resubscribe", headers=headers)
    assert response.status_code == 403
    assert "use the button on our page" in response.text
    assert store_snapshot(store) == before
    assert not store.is_mailable(ana, list_id)


@pytest.mark.parametrize(
    ("database_url", "headers"), on_both_stores_once(SAME_ORIGIN), indirect=["database_url"]
)
async def test_same_origin_resubscribe_works(
    store: Store, signer: TokenSigner, client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    (ana,) = seed(store, 1)
    list_id = store.list_id("members")
    token = signer.sign(subscriber_id=ana, list_id=list_id)
    assert (await client.post(f"/u/{token}", content=ONE_CLICK)).status_code == 200
    response = await client.post(f"/u/{token}/resubscribe", headers=headers)
    assert response.status_code == 200
    assert store.is_mailable(ana, list_id)


async def test_one_click_needs_no_origin_check(
    store: Store, signer: TokenSigner, client: httpx.AsyncClient
) -> None:
    """RFC 8058: the one-click POST comes from the mail provider, from anywhere; and the
    unsubscribe form is never refused (see pages.py for why)."""
    ids = seed(store, 2)
    list_id = store.list_id("members")
    foreign = {"Origin": "https://mail.example.net", "Sec-Fetch-Site": "cross-site"}
    one_click, page_form = (signer.sign(subscriber_id=i, list_id=list_id) for i in ids)
    assert (await client.post(f"/u/{one_click}", content=ONE_CLICK, headers=foreign)).is_success
    assert (await client.post(f"/u/{page_form}", content=b"", headers=foreign)).is_success
    assert [store.is_mailable(i, list_id) for i in ids] == [False, False]


# -- test messages' links ---------------------------------------------------------------------


async def test_a_test_message_link_changes_nothing_and_says_so(
    store: Store, signer: TokenSigner, client: httpx.AsyncClient
) -> None:
    """The token of a `--test-to` message: GET, one-click POST, page POST and resubscribe all
    answer 200 with the "test message" page; nobody is named and nothing changes."""
    seed(store, 3)
    list_id = store.list_id("members")
    token = signer.sign_test_message(list_id=list_id)
    before = store_snapshot(store)
    responses = [
        await client.get(f"/u/{token}"),
        await client.post(f"/u/{token}", content=ONE_CLICK),
        await client.post(f"/u/{token}", files={"List-Unsubscribe": (None, "One-Click")}),
        await client.post(f"/u/{token}"),
        await client.post(f"/u/{token}/resubscribe", headers={"Origin": SITE}),
    ]
    for response in responses:
        assert response.status_code == 200
        assert "This link came from a test message" in response.text
        assert "nobody has been unsubscribed" in response.text
        assert "@example.org" not in response.text
        assert "<form" not in response.text
    assert store_snapshot(store) == before
    assert store.count_subscribers("members") == 3


async def test_a_test_messages_answer_buttons_talk_about_answers(
    store: Store, signer: TokenSigner, client: httpx.AsyncClient
) -> None:
    """The RSVP buttons of a `--test-to` message open the test-message page about
    answers: nothing recorded (it told a new organiser that people are taken off the
    list), and nothing changes."""
    seed(store, 1)
    token = signer.sign_test_message(list_id=store.list_id("members"))
    before = store_snapshot(store)
    response = await client.get(f"/r/{token}?answer=yes")
    assert response.status_code == 200
    assert "no answer has been recorded" in response.text
    assert "unsubscribed" not in response.text
    assert store_snapshot(store) == before


async def test_an_organisers_older_pages_still_get_the_test_message_page(
    store: Store, signer: TokenSigner, tmp_path: Path
) -> None:
    """Pages customised before the test-message page existed: it is drawn from the built-in
    set, inside the organiser's own base.html.j2, instead of failing with a 503."""
    custom = tmp_path / "web"
    shutil.copytree(BUILTIN_WEB, custom)
    (custom / "test_message.html.j2").unlink()
    base = (custom / "base.html.j2").read_text()
    (custom / "base.html.j2").write_text(base.replace("<main", "<!-- ours --><main"))
    seed(store, 1)
    token = signer.sign_test_message(list_id=store.list_id("members"))
    app = create_app(store=store, signer=signer, settings=make_settings(), templates_dir=custom)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=SITE) as client:
        response = await client.get(f"/u/{token}")
    assert response.status_code == 200
    assert "This link came from a test message" in response.text
    assert "<!-- ours -->" in response.text


# -- `mailer serve` -------------------------------------------------------------------------


def serve_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["MAILER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'mailer.db'}"
    env.update(extra)
    return env


# Serving without MAILER_SECRET_KEY (the store's own key): tests/test_signing_keys.py.


@contextlib.contextmanager
def serving(tmp_path: Path, sqlite_url: str, *options: str) -> Iterator[tuple[str, list[str]]]:
    """`mailer serve --port 0 --port-file F OPTIONS`: its base URL, and (once the block
    ends and the server has stopped on SIGINT) its output lines in the list."""
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mailer",
            "serve",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            *options,
        ],
        cwd=tmp_path,
        env=serve_env(tmp_path, MAILER_SECRET_KEY=KEY.decode(), MAILER_DATABASE_URL=sqlite_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output: list[str] = []
    try:
        # Generous: at load 10 on two cores, importing the app alone took over 20 s.
        deadline = time.monotonic() + 90
        while not port_file.exists():
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "mailer serve did not start within 90 s"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{int(port_file.read_text())}", output
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=20)
        output.extend(out.decode().splitlines())


def test_serve_answers_on_its_port_and_logs_no_token(tmp_path: Path, sqlite_url: str) -> None:
    """`mailer serve --port 0 --port-file F` serves the app; its log redacts every token."""
    store = Store.open(sqlite_url)
    (ana,) = seed(store, 1)
    list_id = store.list_id("members")
    token = TokenSigner(KEY).sign(subscriber_id=ana, list_id=list_id)
    with serving(tmp_path, sqlite_url) as (base, output), httpx.Client(base_url=base) as client:
        assert client.get("/healthz").text == "ok"
        assert client.get(f"/u/{token}").status_code == 200
        assert client.post(f"/u/{token}", content=ONE_CLICK).status_code == 200
    assert not store.is_mailable(ana, list_id)
    store.close()
    log = "\n".join(output)
    assert "method=POST path=/u/<redacted> status=200" in log
    assert token not in log


FORGED = TokenSigner(b"an-attackers-own-key-0123456789").sign(subscriber_id=1, list_id=1)


def test_serve_trusts_no_forwarded_header_by_default(tmp_path: Path, sqlite_url: str) -> None:
    """Issue 9: from 127.0.0.1, each POST naming another X-Forwarded-For got a bucket of its
    own, so 456 spoofed POSTs got no 429. By default no proxy is trusted: the budget is the
    TCP peer's, the spoofer is refused, and a real one-click from it still goes through."""
    store = Store.open(sqlite_url)
    (ana,) = seed(store, 1)
    list_id = store.list_id("members")
    token = TokenSigner(KEY).sign(subscriber_id=ana, list_id=list_id)
    options = ("--no-scheduler", "--post-burst", "3", "--post-rate-limit", "0.01")
    with serving(tmp_path, sqlite_url, *options) as (base, _), httpx.Client(base_url=base) as http:
        statuses = [
            http.post(
                f"/u/{FORGED}",
                content=ONE_CLICK,
                headers={"X-Forwarded-For": f"198.51.100.{n}"},
            ).status_code
            for n in range(10)
        ]
        assert statuses == [404] * 3 + [429] * 7
        real = http.post(
            f"/u/{token}",
            content=ONE_CLICK,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Forwarded-For": "198.51.100.200",
            },
        )
        assert real.status_code == 200
    assert not store.is_mailable(ana, list_id)
    store.close()


def test_serve_trusts_forwarded_headers_from_the_proxies_named(
    tmp_path: Path, sqlite_url: str
) -> None:
    """With --forwarded-allow-ips 127.0.0.1 (the proxy), X-Forwarded-For names the client:
    each client has its own budget."""
    options: tuple[str, ...] = ("--no-scheduler", "--post-burst", "3", "--post-rate-limit", "0.01")
    options += ("--forwarded-allow-ips", "127.0.0.1")
    with serving(tmp_path, sqlite_url, *options) as (base, _), httpx.Client(base_url=base) as http:

        def post_from(client: str) -> int:
            headers = {"X-Forwarded-For": client}
            return http.post(f"/u/{FORGED}", content=ONE_CLICK, headers=headers).status_code

        assert [post_from(f"198.51.100.{n}") for n in range(10)] == [404] * 10
        assert [post_from("203.0.113.9") for _ in range(4)] == [404, 404, 404, 429]


def test_serve_refuses_a_malformed_proxy_address(tmp_path: Path) -> None:
    """uvicorn would take a mistyped address as a name that never matches; we stop."""
    done = subprocess.run(
        [sys.executable, "-m", "mailer", "serve", "--forwarded-allow-ips", "127.0.0.1,10.0.0.300"],
        cwd=tmp_path,
        env=serve_env(tmp_path, MAILER_SECRET_KEY=KEY.decode()),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "--forwarded-allow-ips: '10.0.0.300' is not an IP address or network" in done.stderr
    assert "Traceback" not in done.stderr
