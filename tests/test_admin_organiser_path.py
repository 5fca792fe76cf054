"""The organiser's whole path in Chromium, and axe-core on every page, against the app under
uvicorn and the worker `mailer serve` runs beside it (the real Scheduler and SMTP
transport, to an aiosmtpd server), on one SQLite file:

sign in -> create a list -> upload a CSV with bad rows (progress, report, reject file) ->
preview the event for one subscriber (the sandboxed frame, the text part) -> send a test
(seen at the SMTP server) -> a new campaign two minutes ahead and its confirmation ->
the worker sends it, the campaign page moving without a reload and the overview's
"Sending now" showing it -> the report with its charts and tables -> the CSV.

(This walk took over test_admin_browser.py's, which walked the campaign half alone with a
browser, a server and a send of its own: its checks are all here, and its screenshots
still land in test-output/admin/.)

The web app's clock is three minutes behind the worker's (injected), so "two minutes
ahead" in the browser is already due for the worker: nobody waits two real minutes.

The second test walks every GET route of the dashboard (from app.routes, so a page added
later is walked too) and the recipient pages, runs axe-core (axe-playwright-python, its
vendored axe.min.js: nothing fetched) on each HTML page, and fails on any serious or
critical violation; the data holds a list title, a subscriber name and an event title
written as HTML, which must show as text and run nothing.

Screenshots of the Lists, Subscribers and Events pages at 375 and 1280 px (light, and
dark for some) land in test-output/admin-lists/; of the overview, campaigns, new
campaign, campaign, report and sign-in pages at 375 and 1280 px, light and dark, in
test-output/admin/ (no page may scroll sideways). One browser for the module.
"""

from __future__ import annotations

import csv
import email
import email.policy
import re
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine
from starlette.routing import Route

from admin_support import FAST_PASSWORDS, PASSWORD, add_user
from campaign_support import EVENT, seed_list
from mailer.campaigns import lifecycle
from mailer.campaigns.scheduler import Scheduler
from mailer.clock import utcnow
from mailer.config import Settings
from mailer.delivery.smtp import SmtpTransport
from mailer.message.event import load_event
from mailer.store import Store
from mailer.store.signer import load_signer
from mailer.tokens import TokenSigner
from mailer.web import create_app
from smtp_server import SmtpTestServer
from test_web_browser import CHROMIUM, CHROMIUM_ARGS, REPO_ROOT, ServerThread, loopback_listener

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Dialog, Page

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not at /usr/bin/chromium"),
]

SCREENSHOTS = REPO_ROOT / "test-output" / "admin-lists"
CAMPAIGN_SCREENSHOTS = REPO_ROOT / "test-output" / "admin"
BEHIND = timedelta(minutes=3)
GOOD_ROWS = 12
XSS = "<script>alert(1)</script><img src=x onerror=alert(2)>"
TITLE = 'title: "CWO London Public Meeting: Russia, Revolution and Counter-Revolution"'
SERIOUS = ("serious", "critical")
Scheme = Literal["light", "dark"]


class Worker:
    """The scheduler `mailer serve` runs, on its own loop in a thread."""

    def __init__(self, settings: Settings, store: Store) -> None:
        import asyncio

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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        yield server


def settings_for(
    tmp_path: Path, sqlite_url: str, base_url: str, smtp: SmtpTestServer, templates: Path
) -> Settings:
    return Settings(
        from_name="Leeds Tenants Union",
        from_address="invitations@tenants.example.org",
        secret_key=SecretStr("browser-test-secret-key-0123456789"),
        templates_dir=templates,
        var_dir=tmp_path / "var",
        database_url=sqlite_url,
        base_url=base_url,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        timezone="Europe/London",
        poll_interval=0.2,
        rate_limit=3.0,  # 4 s for 12: time to see it move and open the overview meanwhile
        concurrency=1,
        retry_delay=0.1,
    )


def sign_in(page: Page, base_url: str, name: str = "ana") -> None:
    page.goto(f"{base_url}/admin/login")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}/admin/")


def shoot(page: Page, name: str) -> None:
    """A full-page screenshot, and no sideways scrolling at this width."""
    width = page.viewport_size["width"] if page.viewport_size else 0
    page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
    overflow = page.evaluate("() => document.documentElement.scrollWidth > window.innerWidth")
    assert not overflow, f"{name} scrolls sideways at {width} px"


def axe_problems(page: Page) -> list[str]:
    """axe-core's serious and critical violations on the page, one line each."""
    from axe_playwright_python.sync_playwright import Axe  # type: ignore[import-untyped]

    results = Axe().run(page)
    return [
        f"{page.url}: {v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(str(node["target"]) for node in v["nodes"][:3])
        for v in results.response["violations"]
        if v["impact"] in SERIOUS
    ]


def test_the_organisers_whole_path(
    browser: Browser, sqlite_store: Store, sqlite_url: str, tmp_path: Path, smtp: SmtpTestServer
) -> None:
    from playwright.sync_api import expect

    store = sqlite_store
    add_user(store, "ana")
    smtp.rcpt_replies["p03@example.org"] = "550 5.1.1 No such user here"
    listener = loopback_listener()
    base_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    settings = settings_for(tmp_path, sqlite_url, base_url, smtp, REPO_ROOT / "templates")
    app = create_app(
        store=store,
        signer=load_signer(settings, store=store),
        settings=settings,
        now=lambda: utcnow() - BEHIND,
        passwords=FAST_PASSWORDS,
        post_rate_per_minute=None,
    )
    csv_file = tmp_path / "members.csv"
    good = [f"p{i:02d}@example.org,Person {i},Leeds" for i in range(GOOD_ROWS)]
    csv_file.write_text(
        "email,name,city\n"
        + "\n".join([*good[:5], "nobody-at-all,Bad One,York", *good[5:]])
        + "\n@@,Bad Two,Hull\n",
        encoding="utf-8",
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    CAMPAIGN_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with ServerThread(app, listener), Worker(settings, store):
        context = browser.new_context(
            viewport={"width": 1280, "height": 900}, accept_downloads=True
        )
        page = context.new_page()
        page.set_default_timeout(20_000)
        script_errors: list[str] = []
        page.on("console", lambda m: script_errors.append(m.text) if m.type == "error" else None)

        # Signed out: the dashboard sends us to the sign-in page first, saying where to.
        page.goto(f"{base_url}/admin/campaigns/new")
        expect(page).to_have_url(f"{base_url}/admin/login?next=%2Fadmin%2Fcampaigns%2Fnew")
        page.goto(f"{base_url}/admin/lists")
        expect(page).to_have_url(f"{base_url}/admin/login?next=%2Fadmin%2Flists")
        page.get_by_label("Name").fill("ana")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Lists", exact=True)).to_be_visible()

        # A new list.
        page.get_by_label("Name", exact=False).first.fill("members")
        page.get_by_label("Title", exact=False).fill("Leeds members")
        page.get_by_role("button", name="Create list").click()
        expect(page.get_by_role("heading", name="Leeds members")).to_be_visible()
        expect(page.get_by_role("status")).to_have_text("List created.")
        list_url = page.url.split("?")[0]

        # The CSV, with two bad rows: progress, then the report with their line numbers.
        # The test holds SQLite's write lock until the progress page is shown, so the
        # page is seen running, and reaches the report through its own script.
        blocker = create_engine(sqlite_url).connect()
        blocker.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            page.get_by_label("CSV file", exact=True).set_input_files(str(csv_file))
            page.get_by_role("button", name="Upload and import").click()
            expect(page.get_by_role("heading", name="Importing…")).to_be_visible()
            expect(page.locator("progress")).to_be_visible()
            shoot(page, "import-running-light")
        finally:
            blocker.rollback()
            blocker.close()
        expect(page.get_by_role("heading", name="Imported")).to_be_visible()
        expect(page.get_by_text("members.csv:7:")).to_be_visible()
        expect(page.get_by_text("members.csv:15:")).to_be_visible()
        import_url = page.url
        with page.expect_download() as download_info:
            page.get_by_role("link", name="Download every rejected", exact=False).click()
        rejects = tmp_path / "rejects.csv"
        download_info.value.save_as(rejects)
        with rejects.open(encoding="utf-8") as handle:
            assert [row["line"] for row in csv.DictReader(handle)] == ["7", "15"]
        assert store.count_subscribers("members") == GOOD_ROWS

        # The event, previewed for one subscriber; then a test message.
        page.get_by_role("link", name="Events").click()
        page.get_by_role("link", name="CWO London Public Meeting", exact=False).click()
        page.get_by_label("Subscriber's address", exact=False).fill("p02@example.org")
        page.get_by_role("button", name="Show").click()
        expect(page.get_by_text("Showing what Person 2")).to_be_visible()
        frame = page.frame_locator("iframe.preview")
        expect(frame.locator("body")).to_contain_text("Dear Person,")
        expect(page.locator("pre.part").first).to_contain_text("Dear Person,")
        assert page.locator("iframe.preview").get_attribute("sandbox") == ""
        event_url = page.url
        page.get_by_label("Send it to").fill("organiser@example.org")
        page.get_by_role("button", name="Send test").click()
        expect(page.get_by_role("status")).to_contain_text("Sent: the relay answered 250")
        (test_message,) = smtp.messages
        assert test_message.rcpt_tos == ["organiser@example.org"]
        parsed = email.message_from_bytes(test_message.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        assert str(parsed["Subject"]).startswith("[TEST]")

        # A campaign, two minutes ahead on the organiser's clock: the worker sends it.
        page.get_by_role("link", name="Campaigns").click()
        page.get_by_role("link", name="New campaign").first.click()
        at = (utcnow() - BEHIND + timedelta(minutes=2)).astimezone(ZoneInfo("Europe/London"))
        page.get_by_label("Event", exact=True).select_option("london-public-meeting.md")
        page.get_by_label("List", exact=True).select_option("members")
        page.get_by_label("At a time:").check()
        page.get_by_label("Date", exact=True).fill(at.strftime("%Y-%m-%d"))
        page.get_by_label("Time", exact=True).fill(at.strftime("%H:%M"))
        page.get_by_role("button", name="Check").click()
        confirm = page.get_by_role("region", name="Check and confirm")
        expect(confirm).to_contain_text("Leeds Tenants Union <invitations@tenants.example.org>")
        expect(confirm).to_contain_text(f"{GOOD_ROWS} subscriber(s) of list 'members'")
        expect(confirm).to_contain_text(f"127.0.0.1:{smtp.port}")
        expect(confirm).to_contain_text("The event started")  # the CLI's warning
        proposal_url = page.url
        page.get_by_role("button", name=f"Schedule for {GOOD_ROWS} subscriber(s)").click()
        expect(page.get_by_role("heading", name="Campaign 1:", exact=False)).to_be_visible()
        campaign_url = page.url
        done = page.locator("[data-field=done]").first
        page.wait_for_function(
            "() => { const n = Number(document.querySelector('[data-field=done]').textContent);"
            f" return n > 0 && n < {GOOD_ROWS}; }}"
        )
        seen_midway = int(done.text_content() or "0")
        overview = context.new_page()
        overview.goto(f"{base_url}/admin")
        expect(overview.get_by_role("region", name="Sending now")).to_contain_text("members")
        overview.screenshot(
            path=str(CAMPAIGN_SCREENSHOTS / "overview-sending-1280.png"), full_page=True
        )
        overview.close()
        expect(page.locator("[data-field=status]").first).to_have_text("finished", timeout=60_000)
        expect(done).to_have_text(str(GOOD_ROWS))
        # The page reloaded itself once the campaign stopped: no Pause or Cancel left
        # on a finished campaign (they stayed, and were refused when pressed).
        expect(page.get_by_role("button", name="Pause")).to_have_count(0)
        expect(page.get_by_role("button", name="Cancel…")).to_have_count(0)
        assert 0 < seen_midway < GOOD_ROWS
        assert page.url == campaign_url  # the progress moved without a reload
        assert len(smtp.messages) == 1 + GOOD_ROWS - 1  # the test, and one refused at RCPT

        # The report, its charts and tables, its CSV.
        page.get_by_role("link", name="Report").first.click()
        expect(page.get_by_role("heading", name="Report:", exact=False)).to_be_visible()
        expect(page.locator("svg[role=img]")).to_have_count(2)  # outcomes, deliveries
        expect(page.get_by_role("img", name="Deliveries over time")).to_be_visible()
        expect(page.get_by_role("region", name="By receiving domain")).to_contain_text(
            "example.org"
        )
        expect(page.get_by_role("region", name="Not delivered", exact=False)).to_contain_text(
            "p03@example.org"
        )
        report_url = page.url
        with page.expect_download() as download_info:
            page.get_by_role("link", name="Download CSV").click()
        report_csv = tmp_path / "report.csv"
        download_info.value.save_as(report_csv)
        with report_csv.open(encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == GOOD_ROWS
        assert sorted({row["status"] for row in rows}) == ["bounced", "sent"]
        assert script_errors == []

        # The pages of this module, at phone and desktop width; dark for some.
        state = context.storage_state()
        subscriber_url = (
            f"{base_url}/admin/subscribers/{store.get_subscriber_id('p02@example.org')}"
        )
        pages = {
            "lists": f"{base_url}/admin/lists",
            "list": list_url,
            "import": import_url,
            "subscribers": f"{base_url}/admin/subscribers?q=person+1",
            "subscriber": subscriber_url,
            "erase": f"{subscriber_url}/erase",
            "events": f"{base_url}/admin/events",
            "event": event_url,
        }
        dark = {"list", "subscriber", "event"}
        # The campaign half, every page light and dark (test-output/admin/).
        campaign_pages = {
            "overview": f"{base_url}/admin",
            "campaigns": f"{base_url}/admin/campaigns",
            "new-campaign": proposal_url + "&new=yes",
            "campaign": campaign_url,
            "report": report_url,
        }
        # Each page is loaded once and shot at each width and scheme (the viewport and the
        # colour scheme change in place; no page reads either from script): a context and
        # a load for every (width, scheme, page) were most of this test's time.
        shots = browser.new_context(viewport={"width": 1280, "height": 900}, storage_state=state)
        shot = shots.new_page()

        def each_look(
            page: Page, url: str, schemes: tuple[Scheme, ...]
        ) -> Iterator[tuple[Scheme, int]]:
            page.goto(url)
            for scheme in schemes:
                page.emulate_media(color_scheme=scheme)
                for width in (375, 1280):
                    page.set_viewport_size({"width": width, "height": 900})
                    page.evaluate("() => window.scrollTo(0, 0)")
                    yield scheme, width

        for name, url in pages.items():
            schemes: tuple[Scheme, ...] = ("light", "dark") if name in dark else ("light",)
            for scheme, width in each_look(shot, url, schemes):
                shoot(shot, f"{name}-{scheme}")
                if name == "event":
                    # A full-page capture leaves out a sandboxed (out-of-process) frame
                    # that starts below the first screen: the frame alone, scrolled to.
                    shot.frame_locator("iframe.preview").locator("h1").wait_for()
                    shot.locator("iframe.preview").scroll_into_view_if_needed()
                    shot.wait_for_timeout(500)  # its first paint, after it came on screen
                    shot.locator("iframe.preview").screenshot(
                        path=str(SCREENSHOTS / f"event-frame-{scheme}-{width}.png")
                    )
        for name, url in campaign_pages.items():
            for scheme, width in each_look(shot, url, ("light", "dark")):
                shot.screenshot(
                    path=str(CAMPAIGN_SCREENSHOTS / f"{name}-{width}-{scheme}.png"),
                    full_page=True,
                )
                if (name, width, scheme) == ("report", 1280, "light"):
                    # The first screenful, small enough for the README (docs/).
                    shot.screenshot(path=str(CAMPAIGN_SCREENSHOTS / "report-top-1280.png"))
                overflow = shot.evaluate(
                    "() => document.documentElement.scrollWidth > window.innerWidth"
                )
                assert not overflow, f"{name} scrolls sideways at {width} px"
        shots.close()
        signed_out = browser.new_context(viewport={"width": 1280, "height": 900})
        login = signed_out.new_page()
        for scheme, width in each_look(login, f"{base_url}/admin/login", ("light", "dark")):
            login.screenshot(path=str(CAMPAIGN_SCREENSHOTS / f"login-{width}-{scheme}.png"))
        signed_out.close()
        context.close()


def hostile_templates(tmp_path: Path) -> Path:
    folder = tmp_path / "templates" / "events"
    folder.mkdir(parents=True)
    for example in (REPO_ROOT / "templates" / "events").glob("*.md"):
        shutil.copy(example, folder / example.name)
    hostile = EVENT.read_text(encoding="utf-8").replace(TITLE, f'title: "{XSS} Meeting"')
    (folder / "hostile.md").write_text(hostile, encoding="utf-8")
    return folder.parent


def fill(route: Route, ids: dict[str, str]) -> str:
    path = route.path
    for name in route.param_convertors:
        assert name in ids, f"{route.path}: the axe walk does not know how to fill {name!r}"
        path = re.sub(r"\{" + name + r"(:[^}]*)?\}", ids[name], path)
    return path


def test_every_page_passes_axe_and_shows_html_as_text(
    browser: Browser, sqlite_store: Store, sqlite_url: str, tmp_path: Path, smtp: SmtpTestServer
) -> None:
    store = sqlite_store
    add_user(store, "ana")
    seed_list(store, tmp_path, 3)
    store.describe_list("members", title=f"{XSS} list", description=XSS)
    store.add_subscriber("xss@example.org", "members", name=f"{XSS} name")
    store.create_list(XSS, title="Named in HTML")  # a list name, as well as a title
    store.add_subscriber("xss@example.org", XSS)
    event = load_event(EVENT)
    plan = lifecycle.plan_schedule(store, event=event, list_name="members", new=True)
    campaign = lifecycle.schedule(
        store, plan, event=event, event_path=EVENT, when=datetime(2031, 5, 1, tzinfo=UTC)
    )
    listener = loopback_listener()
    base_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    settings = settings_for(tmp_path, sqlite_url, base_url, smtp, hostile_templates(tmp_path))
    signer: TokenSigner = load_signer(settings, store=store)
    app = create_app(
        store=store,
        signer=signer,
        settings=settings,
        now=lambda: datetime(2021, 9, 1, tzinfo=UTC),  # before the event: RSVP is open
        passwords=FAST_PASSWORDS,
        post_rate_per_minute=None,
    )
    list_id = store.list_id("members")
    xss_id = store.get_subscriber_id("xss@example.org")
    first = store.get_subscriber_id("person00000@example.org")
    problems: list[str] = []
    dialogs: list[str] = []
    with ServerThread(app, listener):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(20_000)

        def on_dialog(dialog: Dialog) -> None:
            dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        page.goto(f"{base_url}/admin/login")
        problems += axe_problems(page)
        sign_in(page, base_url)
        # An import job, so that its page exists to be walked.
        page.goto(f"{base_url}/admin/lists/{list_id}")
        upload = tmp_path / "more.csv"
        upload.write_text("email,name\nmore@example.org,More\nbad,Bad\n", encoding="utf-8")
        page.get_by_label("CSV file", exact=True).set_input_files(str(upload))
        page.get_by_role("button", name="Upload and import").click()
        page.get_by_role("heading", name="Imported").wait_for()
        job_id = page.url.rsplit("/", 1)[1]

        ids = {
            "list_id": str(list_id),
            "subscriber_id": str(xss_id),
            "campaign_id": str(campaign.id),
            "job_id": job_id,
            "slug": "hostile",
        }
        walked: list[str] = []
        for route in app.routes:
            assert isinstance(route, Route)
            if not route.path.startswith("/admin") or "GET" not in (route.methods or set()):
                continue
            if route.path == "/admin/login":
                continue  # checked signed out, above
            url = f"{base_url}{fill(route, ids)}"
            answer = context.request.get(url)
            if not answer.headers.get("content-type", "").startswith("text/html"):
                continue  # CSV, JSON, .ics
            if "sandbox" in answer.headers.get("content-security-policy", ""):
                continue  # the framed mail preview: checked inside its event page
            assert answer.status == 200, (url, answer.status)
            page.goto(url)
            problems += axe_problems(page)
            walked.append(route.path)
            # Shown as text: parsed as HTML, it would not be in the page's text at all.
            body = page.locator("body").inner_text()
            if route.path in ("/admin/lists", "/admin/lists/{list_id:int}"):
                assert f"{XSS} list" in body, url
            if route.path == "/admin/lists":
                assert XSS in body.replace(f"{XSS} list", "")  # the other list's name
            if route.path == "/admin/subscribers/{subscriber_id:int}":
                assert f"{XSS} name" in body
                assert XSS in body.replace(f"{XSS} name", "")  # on the list named so
            if route.path == "/admin/events/{slug}":
                assert f"{XSS} Meeting" in body
        for must in ("/admin", "/admin/lists", "/admin/events/{slug}", "/admin/imports/{job_id}"):
            assert must in walked
        # The event list shows the hostile title as text too; and the member search.
        for path in ("/admin/events", "/admin/subscribers?q=xss"):
            page.goto(f"{base_url}{path}")
            assert XSS in page.locator("body").inner_text()

        # The recipient pages: unsubscribe, its confirmation, a test message's, RSVP.
        page.goto(f"{base_url}/u/{signer.sign(subscriber_id=first, list_id=list_id)}")
        problems += axe_problems(page)
        page.get_by_role("button").first.click()
        page.wait_for_load_state()
        problems += axe_problems(page)
        page.goto(f"{base_url}/u/{signer.sign_test_message(list_id=list_id)}")
        problems += axe_problems(page)
        page.goto(f"{base_url}/r/{signer.sign_rsvp(subscriber_id=xss_id, campaign_id=campaign.id)}")
        problems += axe_problems(page)

        from playwright.sync_api import expect

        # Send now asks first (a click mailed a list a month early before): the button
        # opens the question; going back leaves the campaign at its time.
        page.goto(f"{base_url}/admin/campaigns/{campaign.id}")
        page.get_by_role("button", name="Send now…").click()
        expect(
            page.get_by_role("heading", name=f"Send campaign {campaign.id} now?")
        ).to_be_visible()
        shoot(page, "campaign-send-now-question")
        page.get_by_role("link", name="No, go back").click()
        expect(page.locator("[data-field=status]").first).to_have_text("scheduled")
        assert store.get_campaign(campaign.id).scheduled_at == datetime(2031, 5, 1, tzinfo=UTC)
        context.close()
    assert dialogs == []  # no written HTML ran
    assert problems == [], "\n".join(problems)
