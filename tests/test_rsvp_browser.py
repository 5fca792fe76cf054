"""RSVP as a person does it (issue 14): the invitation arrives at a real SMTP server, its
"I'll come" link is opened in Chromium (JavaScript off) against the app under uvicorn,
the guest answers with one guest and a note, then changes to "can't come"; the counts
follow, the first on the waiting list moves up and is told by mail, and a scanner's GET
records nothing. One browser launch for the module.

Screenshots (375 and 1280 px wide, light and dark) land in the test's tmp dir and are
copied to /work/notes/screens/ for review.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from mailer.config import Settings
from mailer.message.event import load_event
from mailer.models import RsvpStatus
from mailer.store import Store
from mailer.store.signer import load_signer
from mailer.web import create_app
from smtp_server import SmtpTestServer
from test_rsvp import copy_event, invite
from test_web_browser import CHROMIUM, CHROMIUM_ARGS, ServerThread, loopback_listener
from web_support import store_snapshot

pytestmark = pytest.mark.browser

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTES_SCREENS = Path("/work/notes/screens")


def rsvp_link(data: bytes, label: str) -> str:
    """The href of the HTML part's link whose text begins with `label`."""
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    html = message.get_body(("html",))
    assert html is not None
    found = re.search(rf'<a [^>]*href="([^"]+)"[^>]*>{re.escape(label)}', str(html.get_content()))
    assert found is not None, label
    return found.group(1).replace("&amp;", "&")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not at /usr/bin/chromium")
async def test_a_guest_answers_from_the_invitation_in_chromium(
    sqlite_store: Store, sqlite_url: str, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    store = sqlite_store
    listener = loopback_listener()
    base_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    # Two places, so one guest with a friend fills the room and the next one waits.
    event_file = copy_event(
        tmp_path,
        replace={
            "starts_at: 2021-09-11T14:30": "starts_at: 2031-09-11T14:30",
            "ends_at: 2021-09-11T16:30": "ends_at: 2031-09-11T16:30",
            "capacity: 40": "capacity: 2",
        },
    )
    slug = load_event(event_file).slug
    screens = tmp_path / "screens"
    screens.mkdir()
    async with SmtpTestServer() as smtp:
        settings = Settings(
            from_name="Communist Workers' Organisation",
            from_address="invitations@cwo.example.org",
            secret_key=SecretStr("browser-test-secret-key-0123456789"),
            templates_dir=REPO_ROOT / "templates",
            var_dir=tmp_path / "var",
            database_url=sqlite_url,
            base_url=base_url,
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            smtp_timeout=5.0,
        )
        store.create_list("members", title="CWO London")
        for index, name in enumerate(("Zoë Adeyemi", "Bob Marsh", "Cleo Park")):
            store.add_subscriber(f"guest{index}@example.org", "members", name=name)
        await invite(store, settings, event_file)
        zoe_mail, bob_mail, cleo_mail = sorted(smtp.messages, key=lambda m: m.rcpt_tos[0])
        zoe, bob = (store.get_subscriber_id(f"guest{i}@example.org") for i in (0, 1))
        link = rsvp_link(zoe_mail.data, "I'll come")
        assert link.startswith(f"{base_url}/r/")
        assert link.endswith("?answer=yes")
        app = create_app(store=store, signer=load_signer(settings, store=store), settings=settings)
        served = ServerThread(app, listener)
        # asyncio's loop, as under `mailer serve` (asyncio.run): uvicorn's "auto" would take
        # uvloop (a dev dependency), which the transport's own tests cover on both loops.
        served.server.config.loop = "asyncio"
        with served:
            # A mail scanner (or link preview) fetches every link: nothing is recorded.
            before = store_snapshot(store)
            async with httpx.AsyncClient() as scanner:
                for label in ("I'll come", "Maybe", "Can't come"):
                    fetched = await scanner.get(rsvp_link(cleo_mail.data, label))
                    assert fetched.status_code == 200
            assert store_snapshot(store) == before

            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
                )
                context = await browser.new_context(
                    java_script_enabled=False, viewport={"width": 1280, "height": 900}
                )
                page = await context.new_page()
                problems: list[str] = []
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                response = await page.goto(link)
                assert response is not None
                assert response.status == 200
                heading = await page.get_by_role("heading", level=1).inner_text()
                assert heading.startswith("CWO London Public Meeting")
                assert "none yet" in await page.inner_text("main")
                await page.screenshot(path=screens / "rsvp-1280.png", full_page=True)
                assert store.get_rsvp(slug, zoe) is None  # opening it changed nothing

                await page.get_by_label("Guests you bring").fill("1")
                await page.get_by_label("Access needs").fill("Step-free access, please")
                async with page.expect_navigation():
                    await page.get_by_role("button", name="I'll come").click()
                main = await page.inner_text("main")
                assert "you are coming, with 1 guest" in main
                assert "Add it to your calendar" in main
                await page.screenshot(path=screens / "rsvp-answered-1280.png", full_page=True)
                answer = store.get_rsvp(slug, zoe)
                assert answer is not None
                assert (answer.status, answer.guests, answer.note) == (
                    RsvpStatus.YES,
                    1,
                    "Step-free access, please",
                )
                counts = store.rsvp_counts(slug)
                assert (counts.yes, counts.guests_yes, counts.places_taken) == (1, 1, 2)

                # The room is full: Bob answers yes and waits (from his own link's page).
                bob_page = await context.new_page()
                await bob_page.goto(rsvp_link(bob_mail.data, "I'll come"))
                async with bob_page.expect_navigation():
                    await bob_page.get_by_role("button", name="I'll come").click()
                assert "you are on the waiting list (number 1)" in await bob_page.inner_text("main")
                waiting = store.get_rsvp(slug, bob)
                assert waiting is not None
                assert waiting.status is RsvpStatus.WAITING

                # Zoë cannot come after all: her places go to Bob, who is told by mail.
                told_before = len(smtp.messages)
                async with page.expect_navigation():
                    await page.get_by_role("button", name="Can't come").click()
                assert "you cannot come" in await page.inner_text("main")
                counts = store.rsvp_counts(slug)
                assert (counts.yes, counts.no, counts.waiting, counts.places_taken) == (
                    1,
                    1,
                    0,
                    1,
                )
                promoted = store.get_rsvp(slug, bob)
                assert promoted is not None
                assert promoted.status is RsvpStatus.YES
                # The notice goes once the page has been answered: wait for it, 10 s at most.
                for _ in range(200):
                    if len(smtp.messages) > told_before:
                        break
                    await asyncio.sleep(0.05)
                (notice,) = smtp.messages[told_before:]
                assert notice.rcpt_tos == ["guest1@example.org"]
                assert b"You have a place" in notice.data
                assert problems == []  # no CSP violation, no failed stylesheet

                # Phone-sized, light and dark: one column, buttons full width.
                for scheme in ("light", "dark"):
                    phone = await browser.new_context(
                        java_script_enabled=False,
                        viewport={"width": 375, "height": 740},
                        color_scheme=scheme,
                    )
                    small = await phone.new_page()
                    await small.goto(rsvp_link(cleo_mail.data, "Maybe"))
                    await small.screenshot(path=screens / f"rsvp-375-{scheme}.png", full_page=True)
                    width = await small.get_by_role("button", name="Maybe").evaluate(
                        "b => b.getBoundingClientRect().width"
                    )
                    assert width > 280
                    # One place left, and Cleo brings a friend: she waits.
                    await small.get_by_label("Guests you bring").fill("1")
                    async with small.expect_navigation():
                        await small.get_by_role("button", name="I'll come").click()
                    assert "waiting list" in await small.inner_text("main")
                    await small.screenshot(
                        path=screens / f"rsvp-waiting-375-{scheme}.png", full_page=True
                    )
                    await phone.close()
                dark = await browser.new_context(
                    java_script_enabled=False,
                    viewport={"width": 1280, "height": 900},
                    color_scheme="dark",
                )
                dark_page = await dark.new_page()
                await dark_page.goto(link)
                await dark_page.screenshot(path=screens / "rsvp-1280-dark.png", full_page=True)
                await browser.close()
    copy_screens(screens)


def copy_screens(screens: Path) -> None:
    """A copy for the lead, who reviews the pages (only where the notes folder exists:
    not on a CI machine)."""
    if not NOTES_SCREENS.parent.is_dir():
        return
    NOTES_SCREENS.mkdir(exist_ok=True)
    for shot in screens.iterdir():
        shutil.copy(shot, NOTES_SCREENS / shot.name)
