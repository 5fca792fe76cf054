"""The organiser's campaign path in Chromium, against the app under uvicorn and the worker
`mailer serve` runs beside it (the real Scheduler and SMTP transport, to an aiosmtpd
server), on one SQLite file:

sign in -> new campaign (event + list) -> its confirmation -> schedule it two minutes
ahead -> the worker sends it, the campaign page's progress moving without a reload ->
the report with its charts -> the CSV download.

The web app's clock is three minutes behind the worker's (injected), so "two minutes
ahead" in the browser is already due for the worker: nobody waits two real minutes.
Screenshots of each page at 375 and 1280 px, light and dark, land in
test-output/admin/ for review. One browser for the module.
"""

from __future__ import annotations

import asyncio
import csv
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from admin_support import FAST_PASSWORDS, PASSWORD, add_user
from campaign_support import seed_list
from mailer.campaigns.scheduler import Scheduler
from mailer.clock import utcnow
from mailer.config import Settings
from mailer.delivery.smtp import SmtpTransport
from mailer.store import Store
from mailer.store.signer import load_signer
from mailer.web import create_app
from smtp_server import SmtpTestServer
from test_web_browser import CHROMIUM, CHROMIUM_ARGS, REPO_ROOT, ServerThread, loopback_listener

pytestmark = pytest.mark.browser

SCREENSHOTS = REPO_ROOT / "test-output" / "admin"
RECIPIENTS = 40
BEHIND = timedelta(minutes=3)


class Worker:
    """The scheduler `mailer serve` runs, on its own loop in a thread."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.scheduler = Scheduler(
            settings=settings,
            store=store,
            signer=load_signer(settings, store=store),
            transport_factory=SmtpTransport.from_settings,
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.loop.run_until_complete(self.scheduler.run())

    def __enter__(self) -> Worker:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.loop.call_soon_threadsafe(self.scheduler.request_stop)
        self.thread.join(timeout=30)
        self.loop.close()


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        server.rcpt_replies["person00003@example.org"] = "550 5.1.1 No such user here"
        yield server


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not at /usr/bin/chromium")
def test_schedule_watch_and_report_a_campaign_in_chromium(
    sqlite_store: Store, sqlite_url: str, tmp_path: Path, smtp: SmtpTestServer
) -> None:
    from playwright.sync_api import expect, sync_playwright

    store = sqlite_store
    seed_list(store, tmp_path, RECIPIENTS)
    add_user(store, "ana")
    listener = loopback_listener()
    base_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    settings = Settings(
        from_name="Leeds Tenants Union",
        from_address="invitations@tenants.example.org",
        secret_key=SecretStr("browser-test-secret-key-0123456789"),
        templates_dir=REPO_ROOT / "templates",
        var_dir=tmp_path / "var",
        database_url=sqlite_url,
        base_url=base_url,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        timezone="Europe/London",
        poll_interval=0.2,
        rate_limit=12.0,  # about 3 s for 40: long enough to watch
        concurrency=1,
        retry_delay=0.1,
    )
    app = create_app(
        store=store,
        signer=load_signer(settings, store=store),
        settings=settings,
        now=lambda: utcnow() - BEHIND,
        passwords=FAST_PASSWORDS,
        post_rate_per_minute=None,
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with (
        ServerThread(app, listener),
        Worker(settings, store),
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(
            viewport={"width": 1280, "height": 900}, accept_downloads=True
        )
        page = context.new_page()
        page.set_default_timeout(20_000)
        script_errors: list[str] = []
        page.on("console", lambda m: script_errors.append(m.text) if m.type == "error" else None)

        # Signed out: the dashboard sends us to the sign-in page.
        page.goto(f"{base_url}/admin/campaigns/new")
        expect(page).to_have_url(f"{base_url}/admin/login?next=%2Fadmin%2Fcampaigns%2Fnew")
        page.get_by_label("Name").fill("ana")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="New campaign")).to_be_visible()

        # The campaign: event and list, two minutes ahead in the organiser's zone.
        at = (utcnow() - BEHIND + timedelta(minutes=2)).astimezone(ZoneInfo("Europe/London"))
        page.get_by_label("Event", exact=True).select_option("london-public-meeting.md")
        page.get_by_label("List", exact=True).select_option("members")
        page.get_by_label("At a time:").check()
        page.get_by_label("Date", exact=True).fill(at.strftime("%Y-%m-%d"))
        page.get_by_label("Time", exact=True).fill(at.strftime("%H:%M"))
        page.get_by_role("button", name="Check").click()
        confirm = page.get_by_role("region", name="Check and confirm")
        expect(confirm).to_contain_text("Leeds Tenants Union <invitations@tenants.example.org>")
        expect(confirm).to_contain_text(f"{RECIPIENTS} subscriber(s) of list 'members'")
        expect(confirm).to_contain_text(f"127.0.0.1:{smtp.port}")
        expect(confirm).to_contain_text("The event started")  # the CLI's warning
        proposal_url = page.url
        page.get_by_role("button", name=f"Schedule for {RECIPIENTS} subscriber(s)").click()

        # The campaign page follows the worker without being reloaded.
        expect(page.get_by_role("heading", name="Campaign 1:", exact=False)).to_be_visible()
        campaign_url = page.url
        done = page.locator("[data-field=done]").first
        page.wait_for_function(
            "() => { const n = Number(document.querySelector('[data-field=done]').textContent);"
            f" return n > 0 && n < {RECIPIENTS}; }}"
        )
        seen_midway = int(done.text_content() or "0")
        overview = context.new_page()
        overview.goto(f"{base_url}/admin")
        expect(overview.get_by_role("region", name="Sending now")).to_contain_text("members")
        overview.screenshot(path=str(SCREENSHOTS / "overview-sending-1280.png"), full_page=True)
        overview.close()
        expect(page.locator("[data-field=status]").first).to_have_text("finished", timeout=60_000)
        expect(done).to_have_text(str(RECIPIENTS))
        assert 0 < seen_midway < RECIPIENTS
        assert page.url == campaign_url  # never reloaded
        assert len(smtp.messages) == RECIPIENTS - 1  # one refused at RCPT

        # The report and its CSV.
        page.get_by_role("link", name="Report").first.click()
        expect(page.get_by_role("heading", name="Report:", exact=False)).to_be_visible()
        expect(page.locator("svg[role=img]")).to_have_count(2)  # outcomes, deliveries
        expect(page.get_by_role("img", name="Deliveries over time")).to_be_visible()
        expect(page.get_by_role("region", name="By receiving domain")).to_contain_text(
            "example.org"
        )
        expect(page.get_by_role("region", name="Not delivered", exact=False)).to_contain_text(
            "person00003@example.org"
        )
        report_url = page.url
        with page.expect_download() as download_info:
            page.get_by_role("link", name="Download CSV").click()
        saved = tmp_path / "report.csv"
        download_info.value.save_as(saved)
        with saved.open(encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == RECIPIENTS
        assert sorted({r["status"] for r in rows}) == ["bounced", "sent"]
        assert script_errors == []

        # Every page, at phone and desktop width, light and dark.
        state = context.storage_state()
        pages = {
            "overview": f"{base_url}/admin",
            "campaigns": f"{base_url}/admin/campaigns",
            "new-campaign": proposal_url + "&new=yes",
            "campaign": campaign_url,
            "report": report_url,
        }
        for scheme in ("light", "dark"):
            for width in (375, 1280):
                shots = browser.new_context(
                    viewport={"width": width, "height": 900},
                    color_scheme=scheme,
                    storage_state=state,
                )
                shot = shots.new_page()
                for name, url in pages.items():
                    shot.goto(url)
                    shot.screenshot(
                        path=str(SCREENSHOTS / f"{name}-{width}-{scheme}.png"), full_page=True
                    )
                    if (name, width, scheme) == ("report", 1280, "light"):
                        # The first screenful, small enough for the README (docs/).
                        shot.screenshot(path=str(SCREENSHOTS / "report-top-1280.png"))
                    overflow = shot.evaluate(
                        "() => document.documentElement.scrollWidth > window.innerWidth"
                    )
                    assert not overflow, f"{name} scrolls sideways at {width} px"
                shots.close()
                signed_out = browser.new_context(
                    viewport={"width": width, "height": 900},
                    color_scheme=scheme,
                )
                login = signed_out.new_page()
                login.goto(f"{base_url}/admin/login")
                login.screenshot(path=str(SCREENSHOTS / f"login-{width}-{scheme}.png"))
                signed_out.close()
        browser.close()
