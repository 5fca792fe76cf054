"""The dashboard's campaign side, in process (httpx over ASGI), on SQLite and PostgreSQL:
a new campaign shows what the CLI's confirmation shows and refuses what it refuses; it is
sent by the worker (the real Scheduler, a memory relay); schedules refuse DST traps;
pause, resume, send-now, cancel and reschedule go through the lifecycle; the overview,
the report (SVG charts with their tables) and the CSV show what the store holds."""

from __future__ import annotations

import asyncio
import csv
import html
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from admin_support import (
    SAME_ORIGIN,
    add_user,
    admin_app,
    admin_client,
    admin_settings,
    sign_in,
)
from campaign_support import seed_list
from mailer.campaigns import lifecycle
from mailer.campaigns.scheduler import Scheduler
from mailer.campaigns.summary import summarise_send
from mailer.delivery.memory import MemoryTransport
from mailer.message.event import load_event
from mailer.models import CampaignStatus, DeliveryStatus, Outcome, UnsubscribeSource
from mailer.store import Store
from mailer.tokens import TokenSigner

EVENT_NAME = "london-public-meeting.md"


@pytest.fixture
def seeded(store: Store, tmp_path: Path) -> Store:
    seed_list(store, tmp_path, 6)
    return store


def form_for(when: str = "now", **extra: str) -> dict[str, str]:
    return {"event": EVENT_NAME, "list": "members", "when": when, **extra}


async def question(client: httpx.AsyncClient, **fields: str) -> dict[str, str]:
    """What the question page's confirm form carries besides the fields: `seen`, if it
    shows one (only when the campaign may go ahead)."""
    page = await client.get("/admin/campaigns/new", params=fields)
    assert page.status_code == 200, page.text
    seen = re.search(r'name="seen" value="([^"]*)"', page.text)
    return {"seen": seen.group(1)} if seen else {}


async def create(client: httpx.AsyncClient, token: str, **fields: str) -> httpx.Response:
    """Ask (GET the question page), then confirm (POST its form), as the browser does."""
    return await confirm(client, token, **fields, **await question(client, **fields))


async def confirm(client: httpx.AsyncClient, token: str, **fields: str) -> httpx.Response:
    return await client.post(
        "/admin/campaigns/new", data={"csrf_token": token, **fields}, headers=SAME_ORIGIN
    )


def campaign_id_of(response: httpx.Response) -> int:
    assert response.status_code == 303, response.text
    found = re.fullmatch(r"/admin/campaigns/(\d+)", response.headers["location"])
    assert found
    return int(found.group(1))


async def work_until_settled(store: Store, campaign_id: int, transport: MemoryTransport) -> None:
    """The worker `mailer serve` runs, with a memory relay, until the campaign settles."""
    settings = admin_settings(poll_interval=0.05, rate_limit=1000.0)
    scheduler = Scheduler(
        settings=settings,
        store=store,
        signer=TokenSigner(b"test-key-for-the-web-app-0123456789"),
        transport_factory=lambda _settings: transport,
    )
    running = asyncio.create_task(scheduler.run())
    try:
        for _ in range(400):
            status = store.get_campaign(campaign_id).status
            if status in (CampaignStatus.FINISHED, CampaignStatus.CANCELLED):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"campaign {campaign_id} still {status}")
    finally:
        scheduler.request_stop()
        await running


async def test_new_campaign_shows_the_cli_confirmation_and_the_worker_sends_it(
    seeded: Store,
) -> None:
    """The proposal page has every line of the CLI's confirmation (the same function's
    figures) and its past-event warning; GET wrote nothing; the POST makes a `sending`
    campaign nobody holds, which the worker takes and sends; the report and CSV follow."""
    store = seeded
    app = admin_app(store)
    settings = admin_settings()
    event = load_event(Path("templates/events") / EVENT_NAME)
    expected = summarise_send(settings, event, list_name="members", audience=6)
    async with admin_client(app) as client:
        page = await sign_in(client, add_user(store))
        shown = await client.get("/admin/campaigns/new", params=form_for())
        assert shown.status_code == 200
        text = shown.text
        for value in (
            expected.from_line,
            expected.reply_to,
            expected.subject,
            f"{expected.unsubscribe_base}/u/...",
            "6 subscriber(s) of list 'members'",
            expected.relay,
        ):
            assert str(value) in html.unescape(text), value
        assert "The event started" in text  # the CLI's too-late sentence
        assert store.campaigns() == []  # GET changes nothing
        campaign_id = campaign_id_of(await create(client, page.csrf_token, **form_for()))
        campaign = store.get_campaign(campaign_id)
        assert campaign.status is CampaignStatus.SENDING
        assert campaign.lease_owner is None  # for the worker, not this process
        transport = MemoryTransport()
        await work_until_settled(store, campaign_id, transport)
        assert sorted(m.recipient for m in transport.sent) == [
            f"person{i:05d}@example.org" for i in range(6)
        ]
        detail = await client.get(f"/admin/campaigns/{campaign_id}")
        assert "finished" in detail.text
        overview = await client.get("/admin")
        assert f"/admin/campaigns/{campaign_id}/report" in overview.text
        report = await client.get(f"/admin/campaigns/{campaign_id}/report")
        assert report.status_code == 200
        assert report.text.count('role="img"') >= 2
        assert "Deliveries over time" in report.text
        assert "example.org" in report.text  # the per-domain table
        download = await client.get(f"/admin/campaigns/{campaign_id}/report.csv")
        assert download.headers["content-type"].startswith("text/csv")
        assert "attachment" in download.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(download.text)))
        assert len(rows) == 6
        assert {r["status"] for r in rows} == {"sent"}
        # The same ledger is refused a second time, as `mailer send` refuses it.
        again = await create(client, page.csrf_token, **form_for())
        assert again.status_code == 409
        assert "already went to" in again.text
        # In the dashboard's words: its checkbox, not the CLI's --new.
        assert "Tick “Send again even if this event already went to this list”" in again.text
        assert "--new" not in again.text
        assert len(store.campaigns()) == 1


async def test_send_again_is_refused_if_a_campaign_started_after_the_question(
    seeded: Store,
) -> None:
    """ "Send again" ticked: the question showed the finished campaign; before the
    organiser confirms, another campaign of the event to the list is started (a terminal,
    another organiser). The confirmation is refused and nothing new is made: planned
    afresh, it would have mailed the list beside a campaign nobody saw."""
    store = seeded
    now = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)
    app = admin_app(store, now=lambda: now)
    event_file = Path(admin_settings().templates_dir) / "events" / EVENT_NAME
    event = load_event(event_file)
    async with admin_client(app) as client:
        page = await sign_in(client, add_user(store))
        first = campaign_id_of(await create(client, page.csrf_token, **form_for()))
        await work_until_settled(store, first, MemoryTransport())
        again = form_for(new="yes")
        shown = await question(client, **again)
        assert shown == {"seen": str(first)}
        plan = lifecycle.plan_send(store, event=event, list_name="members", new=True)
        meanwhile = lifecycle.start_send(
            store, plan, event=event, event_path=event_file, owner="terminal"
        )
        answer = await confirm(client, page.csrf_token, **again, **shown)
        assert answer.status_code == 409, answer.text
        assert (
            f"campaign {meanwhile.id} of this event to &#39;members&#39; was started after "
            "this confirmation was shown; nothing new was started" in answer.text
        )
        assert [c.id for c in store.campaigns()] == [first, meanwhile.id]
        # A confirmation that did not come from a question page is refused the same way.
        bare = await confirm(client, page.csrf_token, **again)
        assert bare.status_code == 409, bare.text
        assert "this confirmation does not say what its question showed" in bare.text
        assert len(store.campaigns()) == 2
        # Asked afresh, it shows the new campaign and may go ahead.
        assert await question(client, **again) == {"seen": str(meanwhile.id)}


async def test_schedule_refuses_dst_traps_and_the_past_and_keeps_the_zone(seeded: Store) -> None:
    """Scheduling: a time skipped or repeated by a DST change is refused with the CLI's
    words, a past time too, and nothing is created; a good local time is stored in UTC and
    shown in MAILER_TIMEZONE on the overview with its audience."""
    store = seeded
    now = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)
    app = admin_app(store, now=lambda: now)
    async with admin_client(app) as client:
        page = await sign_in(client, add_user(store))
        for date, clock, said in (
            ("2031-03-30", "01:30", "does not exist in Europe/London"),
            ("2031-10-26", "01:30", "happens twice in Europe/London"),
            ("2031-02-01", "10:00", "is in the past"),
        ):
            answer = await create(
                client, page.csrf_token, **form_for("scheduled", date=date, time=clock)
            )
            assert answer.status_code == 409, answer.text
            assert said in answer.text
            assert "Send time:" in answer.text
        assert store.campaigns() == []
        campaign_id = campaign_id_of(
            await create(
                client,
                page.csrf_token,
                **form_for("scheduled", date="2031-04-05", time="10:00", tz="Europe/London"),
            )
        )
        campaign = store.get_campaign(campaign_id)
        assert campaign.status is CampaignStatus.SCHEDULED
        assert campaign.scheduled_at == datetime(2031, 4, 5, 9, 0, tzinfo=UTC)  # BST
        overview = await client.get("/admin")
        assert "Sat 05 Apr 2031, 10:00 BST" in overview.text
        assert re.search(r"<td class=\"num\">6</td>", overview.text)


async def test_actions_go_through_the_lifecycle_and_cli_changes_show(seeded: Store) -> None:
    """Pause, resume (back to its time), reschedule, send-now and cancel from the browser
    move the campaign as the CLI would; what the lifecycle refuses is refused with its
    words; a pause made by the CLI (the same function) shows at the next page view."""
    store = seeded
    now = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)
    app = admin_app(store, now=lambda: now)
    async with admin_client(app) as client:
        page = await sign_in(client, add_user(store))
        token = page.csrf_token
        campaign_id = campaign_id_of(
            await create(client, token, **form_for("scheduled", date="2031-04-05", time="10:00"))
        )
        base = f"/admin/campaigns/{campaign_id}"

        async def act(action: str, **data: str) -> httpx.Response:
            return await client.post(
                f"{base}/{action}", data={"csrf_token": token, **data}, headers=SAME_ORIGIN
            )

        lifecycle.pause(store, campaign_id)  # what `mailer campaign pause` calls
        assert 'data-field="status">paused<' in (await client.get(base)).text
        assert (await act("resume")).status_code == 303
        assert store.get_campaign(campaign_id).status is CampaignStatus.SCHEDULED
        assert (await act("reschedule", date="2031-05-01", time="09:30")).status_code == 303
        assert store.get_campaign(campaign_id).scheduled_at == datetime(
            2031, 5, 1, 8, 30, tzinfo=UTC
        )
        refused = await act("reschedule", date="2031-03-30", time="01:30")
        assert refused.status_code == 409
        assert "does not exist" in refused.text
        # Send now and cancel ask first, as the CLI does: the button opens a question;
        # a post without its answer changes nothing and leads to the question.
        question = await client.get(f"{base}/send-now")
        assert question.status_code == 200
        assert f"Send campaign {campaign_id} now?" in question.text
        assert "goes now to 6 subscriber(s)" in question.text
        unasked = await act("send-now")
        assert (unasked.status_code, unasked.headers["location"]) == (303, f"{base}/send-now")
        assert store.get_campaign(campaign_id).scheduled_at != now
        assert (await act("send-now", confirm="send-now")).status_code == 303
        moved = store.get_campaign(campaign_id)
        assert moved.status is CampaignStatus.SCHEDULED
        assert moved.scheduled_at == now
        assert "for good?" in (await client.get(f"{base}/cancel")).text
        assert (await act("cancel")).headers["location"] == f"{base}/cancel"
        assert store.get_campaign(campaign_id).status is CampaignStatus.SCHEDULED
        assert (await act("cancel", confirm="cancel")).status_code == 303
        assert store.get_campaign(campaign_id).status is CampaignStatus.CANCELLED
        refused = await act("pause")
        assert refused.status_code == 409
        assert f"campaign {campaign_id} is cancelled; cannot pause it" in refused.text
        assert store.get_campaign(campaign_id).status is CampaignStatus.CANCELLED


async def test_progress_json_and_report_figures_follow_the_ledger(seeded: Store) -> None:
    """The progress endpoint counts the ledger; a settled campaign's report figures are
    kept, and recomputed when an unsubscribe through its links arrives later."""
    store = seeded
    app = admin_app(store)
    async with admin_client(app) as client:
        page = await sign_in(client, add_user(store))
        campaign_id = campaign_id_of(await create(client, page.csrf_token, **form_for()))
        before = (await client.get(f"/admin/campaigns/{campaign_id}/progress")).json()
        assert before == {
            "id": campaign_id,
            "status": "sending",
            "done": 0,
            "total": 6,
            "percent": 0,
            "sent": 0,
            "deferred": 0,
            "bounced": 0,
            "failed": 0,
            "unknown": 0,
            "waiting": 0,
        }
        refused = Outcome(DeliveryStatus.BOUNCED, 550, '=HYPERLINK("x") 5.1.1 no such user')
        transport = MemoryTransport({"person00001@example.org": refused})
        await work_until_settled(store, campaign_id, transport)
        after = (await client.get(f"/admin/campaigns/{campaign_id}/progress")).json()
        assert (after["status"], after["sent"], after["bounced"], after["percent"]) == (
            "finished",
            5,
            1,
            100,
        )
        report = await client.get(f"/admin/campaigns/{campaign_id}/report")
        assert "person00001@example.org" in report.text
        assert "550" in report.text
        kept = store.report_figures(campaign_id, CampaignStatus.FINISHED)
        assert kept.cached
        assert kept.unsubscribed == 0
        person = store.get_subscriber_id("person00002@example.org")
        store.unsubscribe(
            person,
            store.list_id("members"),
            source=UnsubscribeSource.PAGE,
            campaign_id=campaign_id,
        )
        fresh = store.report_figures(campaign_id, CampaignStatus.FINISHED)
        assert not fresh.cached
        assert fresh.unsubscribed == 1
        download = await client.get(f"/admin/campaigns/{campaign_id}/report.csv")
        assert "'=HYPERLINK" in download.text  # spreadsheet-safe, as the CLI's CSV


def test_charts_regroup_long_sends_into_few_bars() -> None:
    """Five hours of minutes become at most 48 bars, gaps kept, labels in the zone."""
    from zoneinfo import ZoneInfo

    from mailer.web.admin.charts import MAX_BARS, regroup

    start = datetime(2031, 6, 1, 8, 0, tzinfo=UTC)
    series = [
        ((start + timedelta(minutes=m)).strftime("%Y-%m-%d %H:%M"), 10)
        for m in range(300)
        if not 60 <= m < 120
    ]
    buckets, step = regroup(series, zone=ZoneInfo("Europe/London"), key_format="%Y-%m-%d %H:%M")
    assert len(buckets) <= MAX_BARS
    assert step == timedelta(minutes=10)
    assert sum(b.count for b in buckets) == 2400
    assert [b.count for b in buckets[6:12]] == [0] * 6
    assert buckets[0].label == "09:00"  # BST
