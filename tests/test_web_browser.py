"""The unsubscribe flow in a real browser: mail received over SMTP -> link -> Chromium.

The app runs under uvicorn on a loopback port (in a thread); the invitation is composed by
InvitationBuilder and delivered with aiosmtplib to a real aiosmtpd server; headless
Chromium, with JavaScript off, follows the link from the received bytes and clicks the
button. Screenshots of each page land in test-output/browser/ (gitignored) for review.
"""

from __future__ import annotations

import email
import email.policy
import re
import socket
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from mailer.config import Settings
from mailer.message.compose import InvitationBuilder
from mailer.message.event import load_event
from mailer.models import Recipient, Subscriber
from mailer.store import Store
from mailer.store.imports import ImportRow
from mailer.store.signer import load_signer
from mailer.tokens import unsubscribe_url
from mailer.web import create_app
from smtp_server import SmtpTestServer

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO_ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO_ROOT / "test-output" / "browser"
ORGANISATION = "Leeds Tenants Union"


def loopback_listener() -> socket.socket:
    """A socket bound to 127.0.0.1:<free port>, so the URL is known before the app is made."""
    # IPPROTO_TCP, so that asyncio sets TCP_NODELAY on accepted connections.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.bind(("127.0.0.1", 0))
    return listener


class ServerThread:
    """uvicorn on `listener`, in a daemon thread, stopped on exit."""

    def __init__(self, app: Starlette, listener: socket.socket) -> None:
        self.listener = listener
        self.port = int(self.listener.getsockname()[1])
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.listener]}, daemon=True
        )

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.listener.close()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    opened = loopback_listener()
    yield opened
    opened.close()


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str, listener: socket.socket) -> Settings:
    return Settings(
        from_name=ORGANISATION,
        from_address="invitations@tenants.example.org",
        secret_key=SecretStr("browser-test-secret-key-0123456789"),
        templates_dir=REPO_ROOT / "templates",
        var_dir=tmp_path / "var",
        database_url=sqlite_url,
        # Where the pages are served: their forms are checked against this origin.
        base_url=f"http://127.0.0.1:{listener.getsockname()[1]}",
    )


@pytest.fixture
def served(
    sqlite_store: Store, settings: Settings, listener: socket.socket
) -> Iterator[ServerThread]:
    app = create_app(store=sqlite_store, signer=load_signer(settings), settings=settings)
    with ServerThread(app, listener) as server:
        yield server


def other_site(resubscribe_url: str) -> Starlette:
    """Another site (its origin differs from ours) whose page posts to our resubscribe URL."""
    form = (
        "<!doctype html><title>Win a prize</title>"
        f'<form method="post" action="{resubscribe_url}">'
        '<button type="submit">Claim</button></form>'
    )

    async def page(_request: Request) -> Response:
        return HTMLResponse(form)

    return Starlette(routes=[Route("/", page)])


def unsubscribe_link(message: EmailMessage) -> str:
    """The https/http URI of the (single) List-Unsubscribe header, as receivers parse it."""
    (header,) = message.get_all("List-Unsubscribe") or []
    uris: list[str] = re.findall(r"<([^>]+)>", str(header))
    (web,) = [u for u in uris if u.startswith(("http://", "https://"))]
    return web


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not at /usr/bin/chromium")
async def test_unsubscribe_from_a_received_message_in_chromium(
    sqlite_store: Store, settings: Settings, served: ServerThread
) -> None:
    """A person opens the link from their invitation, clicks Unsubscribe, sees it confirmed,
    and is off the list; a broken link shows the "not valid" page."""
    from playwright.async_api import async_playwright

    store = sqlite_store
    store.import_subscribers(
        "members",
        [ImportRow(Subscriber(email="zoe@example.org", name="Zoë Adeyemi"))],
        source="test",
    )
    zoe, list_id = store.get_subscriber_id("zoe@example.org"), store.list_id("members")
    base_url = f"http://127.0.0.1:{served.port}"
    token = load_signer(settings).sign(subscriber_id=zoe, list_id=list_id, campaign_id=7)

    # Compose and deliver the invitation over SMTP, exactly as a campaign would.
    event = load_event(REPO_ROOT / "templates" / "events" / "london-public-meeting.md")
    builder = InvitationBuilder(
        event,
        sender=settings.sender_identity,
        campaign_id=7,
        list_name="members",
        templates_dir=settings.templates_dir,
    )
    outgoing = builder.build(
        Recipient(subscriber_id=zoe, email="zoe@example.org", name="Zoë Adeyemi", attributes={}),
        unsubscribe_url=unsubscribe_url(base_url, token),
    )
    async with SmtpTestServer() as smtp:
        await aiosmtplib.send(
            outgoing.data,
            sender=outgoing.sender,
            recipients=[outgoing.recipient],
            hostname="127.0.0.1",
            port=smtp.port,
        )
    (received,) = smtp.messages
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = unsubscribe_link(message)
    assert link == f"{base_url}/u/{token}"
    text_part, html_part = (message.get_body(("plain",)), message.get_body(("html",)))
    assert text_part is not None
    assert html_part is not None
    assert link in text_part.get_content()
    assert link in html_part.get_content()

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        # No JavaScript: the pages must work as plain HTML forms.
        context = await browser.new_context(java_script_enabled=False)
        page = await context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)

        response = await page.goto(link)
        assert response is not None
        assert response.status == 200
        assert await page.get_by_role("heading", level=1).inner_text() == (
            "Unsubscribe from members?"
        )
        assert "z***@example.org" in await page.inner_text("main")
        assert ORGANISATION.upper() in (await page.inner_text("main")).upper()
        # The stylesheet applied despite CSP default-src 'none' (style-src 'self').
        button = page.get_by_role("button", name="Unsubscribe")
        colour = await button.evaluate("b => getComputedStyle(b).backgroundColor")
        assert colour == "rgb(179, 38, 30)"
        await page.screenshot(path=SCREENSHOTS / "1-unsubscribe-page.png", full_page=True)
        assert store.is_mailable(zoe, list_id)  # opening the page changed nothing

        await button.focus()
        await page.screenshot(path=SCREENSHOTS / "1b-button-focused.png")
        async with page.expect_navigation():
            await button.click()
        assert page.url == link  # answered in place, no redirect
        assert await page.get_by_role("heading", level=1).inner_text() == "You are unsubscribed"
        await page.screenshot(path=SCREENSHOTS / "2-confirmation.png", full_page=True)
        assert not store.is_mailable(zoe, list_id)
        assert store.count_subscribers("members") == 0

        # Clicked by mistake: subscribe again, then leave again.
        async with page.expect_navigation():
            await page.get_by_role("button", name="Subscribe again").click()
        assert await page.get_by_role("heading", level=1).inner_text() == "You are subscribed again"
        await page.screenshot(path=SCREENSHOTS / "3-resubscribed.png", full_page=True)
        assert store.is_mailable(zoe, list_id)
        async with page.expect_navigation():
            await page.get_by_role("button", name="Unsubscribe").click()
        assert not store.is_mailable(zoe, list_id)
        assert problems == []  # no CSP violation, no failed stylesheet

        # Another site holding her link cannot put her back on the list (its origin,
        # http://localhost:PORT, is not ours, http://127.0.0.1:PORT).
        with ServerThread(other_site(f"{link}/resubscribe"), loopback_listener()) as evil:
            await page.goto(f"http://localhost:{evil.port}/")
            async with page.expect_navigation():
                await page.get_by_role("button", name="Claim").click()
        assert await page.get_by_role("heading", level=1).inner_text() == (
            "Please use the button on our page"
        )
        await page.screenshot(path=SCREENSHOTS / "3b-cross-site-refused.png", full_page=True)
        assert not store.is_mailable(zoe, list_id)

        response = await page.goto(link[:-3] + "xyz")
        assert response is not None
        assert response.status == 404
        assert await page.get_by_role("heading", level=1).inner_text() == "This link is not valid"
        await page.screenshot(path=SCREENSHOTS / "4-invalid-link.png", full_page=True)

        # A test message's link: a page that says so, and no button.
        test_token = load_signer(settings).sign_test_message(list_id=list_id)
        response = await page.goto(f"{base_url}/u/{test_token}")
        assert response is not None
        assert response.status == 200
        assert await page.get_by_role("heading", level=1).inner_text() == (
            "This link came from a test message"
        )
        assert await page.get_by_role("button").count() == 0
        await page.screenshot(path=SCREENSHOTS / "4b-test-message.png", full_page=True)

        # A phone-sized screen in dark mode: one column, the button full width.
        phone = await browser.new_context(
            java_script_enabled=False, viewport={"width": 360, "height": 640}, color_scheme="dark"
        )
        small = await phone.new_page()
        await small.goto(link)
        await small.screenshot(path=SCREENSHOTS / "5-phone-dark.png", full_page=True)
        width = await small.get_by_role("button").evaluate("b => b.getBoundingClientRect().width")
        assert width > 280
        await browser.close()
