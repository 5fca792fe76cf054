"""An event sent to two lists reaches the people on both once.

A new organiser sent an event to list `web`, then to list `messy`: the three people on
both got it twice, and nothing said so. Now a new invitation leaves out (in the ledger as
skipped, saying why) whoever already had this event's invitation through another
campaign, and the confirmation says how many; `--new` mails them too. Through the real
engine and an aiosmtpd server; what the server received is what is checked.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select, update

from campaign_support import EVENT, make_settings, send
from mailer.audience.importer import import_file
from mailer.campaigns import lifecycle
from mailer.campaigns.trial import dry_run
from mailer.errors import CampaignError
from mailer.message.event import load_event
from mailer.models import CampaignRecord, DeliveryStatus
from mailer.store import Store
from mailer.store.ledger import ALREADY_INVITED, HELD_BACK
from mailer.store.schema import deliveries
from mailer.store.signer import load_signer
from smtp_server import SmtpTestServer


def import_lists(store: Store, tmp_path: Path, **members: list[str]) -> None:
    """Each list named with its members' addresses."""
    for name, addresses in members.items():
        path = tmp_path / f"{name}.csv"
        path.write_text("email\n" + "".join(f"{a}\n" for a in addresses))
        import_file(store, path, list_name=name, rejects_path=tmp_path / f"{name}-rejects.csv")


def two_lists(store: Store, tmp_path: Path) -> None:
    """`web`: a, b, c, d; `messy`: c, d, e (c and d are on both)."""
    import_lists(
        store,
        tmp_path,
        web=[f"{p}@example.org" for p in "abcd"],
        messy=[f"{p}@example.org" for p in "cde"],
    )


def started_together(
    store: Store, *, new: tuple[bool, bool] = (False, False)
) -> list[tuple[CampaignRecord, int | None]]:
    """Campaigns of the event to `web`, then `messy` (`new`: --new for each), each with
    its audience taken before either has sent anything (started at the same time, or
    the first paused): (campaign, rows its snapshot took) for each."""
    event = load_event(EVENT)
    made = []
    for list_name, mail_again in zip(("web", "messy"), new, strict=True):
        plan = lifecycle.plan_send(store, event=event, list_name=list_name, new=mail_again)
        campaign = lifecycle.start_send(store, plan, event=event, event_path=EVENT, owner=None)
        made.append((campaign, store.snapshot_audience(campaign.id, plan.list_id)))
    return made


async def invite(store: Store, tmp_path: Path, port: int, list_name: str, *, new: bool) -> int:
    event = load_event(EVENT)
    plan = lifecycle.plan_send(store, event=event, list_name=list_name, new=new)
    campaign = lifecycle.start_send(store, plan, event=event, event_path=EVENT, owner=None)
    await send(make_settings(tmp_path, port), store, campaign.id)
    return plan.audience


def rows(store: Store, campaign_id: int) -> dict[str, tuple[str, str | None]]:
    with store.engine.connect() as connection:
        found = connection.execute(
            select(deliveries.c.email, deliveries.c.status, deliveries.c.last_reply).where(
                deliveries.c.campaign_id == campaign_id
            )
        )
        return {r.email: (r.status, r.last_reply) for r in found}


async def test_the_second_list_leaves_out_those_the_first_reached(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    two_lists(store, tmp_path)
    assert await invite(store, tmp_path, smtp_server.port, "web", new=False) == 4
    event = load_event(EVENT)
    plan = lifecycle.plan_send(store, event=event, list_name="messy", new=False)
    assert (plan.audience, plan.already_invited) == (1, 2)
    assert "2 of them already had this event's invitation" in lifecycle.already_invited_note(
        plan.already_invited
    )
    second = lifecycle.start_send(store, plan, event=event, event_path=EVENT, owner=None)
    await send(make_settings(tmp_path, smtp_server.port), store, second.id)

    received = Counter(smtp_server.recipients)
    assert received == Counter({f"{p}@example.org": 1 for p in "abcde"})
    ledger = rows(store, second.id)
    assert ledger["e@example.org"][0] == DeliveryStatus.SENT.value
    for both in ("c@example.org", "d@example.org"):
        assert ledger[both] == (DeliveryStatus.SKIPPED.value, ALREADY_INVITED)


async def test_two_lists_sending_at_the_same_time_mail_the_overlap_once(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """Both campaigns' audiences are taken before either has reached anyone (started
    together, or the first paused): the snapshots cannot leave anybody out. The marking
    before each message does: whoever the other campaign reached by then is skipped,
    saying why. Before, c and d got it twice."""
    two_lists(store, tmp_path)
    (web, web_taken), (messy, messy_taken) = started_together(store)
    assert (web_taken, messy_taken) == (len("abcd"), len("cde"))
    settings = make_settings(tmp_path, smtp_server.port)
    await send(settings, store, messy.id)
    await send(settings, store, web.id)

    received = Counter(smtp_server.recipients)
    assert received == Counter({f"{p}@example.org": 1 for p in "abcde"})
    ledger = rows(store, web.id)
    assert ledger["a@example.org"][0] == DeliveryStatus.SENT.value
    for both in ("c@example.org", "d@example.org"):
        assert ledger[both] == (DeliveryStatus.SKIPPED.value, ALREADY_INVITED)
    assert store.delivery_counts(web.id).skipped == 2


async def test_two_campaigns_sending_side_by_side_mail_the_overlap_once(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """The two campaigns send at once (two engines, each marking its rows from a thread
    of its own, over the same people in the same order), so both may mark one person in
    the same moment: on PostgreSQL only the event's lock taken before marking keeps the
    second from missing the first's uncommitted row."""
    people = [f"p{i:03d}@example.org" for i in range(400)]
    import_lists(store, tmp_path, web=people[:300], messy=people[100:])
    made = [campaign for campaign, _ in started_together(store)]
    settings = make_settings(tmp_path, smtp_server.port, concurrency=8)
    await asyncio.gather(*(send(settings, store, campaign.id) for campaign in made))

    received = Counter(smtp_server.recipients)
    assert set(received) == set(people)
    assert [p for p, n in received.items() if n != 1] == []
    skipped = sum(store.delivery_counts(campaign.id).skipped for campaign in made)
    assert skipped == 200


async def test_someone_being_sent_the_other_campaign_is_held_back_not_left_out(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """`web` marks c and d `sending`, then waits for its slow rate; `messy` meanwhile
    holds them back (deferred, saying why), not skipped. `web` is then paused (its rows go
    back to the queue) and cancelled: `messy` sends them. Skipped for good (as a review
    showed), c and d would have had no invitation at all."""
    two_lists(store, tmp_path)
    (web, _), (messy, _) = started_together(store)
    slow = make_settings(tmp_path, smtp_server.port, rate_limit=0.2, concurrency=4)
    sending_web = asyncio.create_task(send(slow, store, web.id))
    await eventually(lambda: rows(store, web.id)["c@example.org"][0] == "sending")
    sending_messy = asyncio.create_task(
        send(make_settings(tmp_path, smtp_server.port), store, messy.id)
    )
    held = (DeliveryStatus.DEFERRED.value, HELD_BACK)
    await eventually(lambda: rows(store, messy.id)["c@example.org"] == held)
    lifecycle.pause(store, web.id)
    await sending_web
    lifecycle.cancel(store, web.id)
    await sending_messy

    received = Counter(smtp_server.recipients)
    assert received["c@example.org"] == received["d@example.org"] == received["e@example.org"] == 1
    assert max(received.values()) == 1
    ledger = rows(store, messy.id)
    for both in ("c@example.org", "d@example.org", "e@example.org"):
        assert ledger[both][0] == DeliveryStatus.SENT.value, ledger


async def test_rows_left_sending_by_a_crash_in_a_cancelled_campaign_hold_nobody_back(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """`web` died with c and d `sending` and was then cancelled, so nothing will ever
    settle those rows: they must not hold c and d back in `messy` (a review: its send
    never ended, and c and d never had any invitation)."""
    two_lists(store, tmp_path)
    (web, _), (messy, _) = started_together(store)
    with store.engine.begin() as connection:  # as a kill -9 leaves them
        connection.execute(
            update(deliveries)
            .where(
                deliveries.c.campaign_id == web.id,
                deliveries.c.email.in_(["c@example.org", "d@example.org"]),
            )
            .values(status=DeliveryStatus.SENDING.value)
        )
    lifecycle.cancel(store, web.id)
    settings = make_settings(tmp_path, smtp_server.port)
    await asyncio.wait_for(send(settings, store, messy.id), 60)
    assert Counter(smtp_server.recipients) == Counter({f"{p}@example.org": 1 for p in "cde"})


async def test_another_meeting_of_the_same_title_and_time_is_another_event(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """Two branches, one title and one start, two venues: whoever is on both lists gets
    both invitations (a review: the second one left them out as 'already had it').
    And the same file moved to a new date is a new event too."""
    two_lists(store, tmp_path)
    text = EVENT.read_text(encoding="utf-8")
    elsewhere = tmp_path / "events" / "meeting-in-leeds.md"
    elsewhere.parent.mkdir()
    elsewhere.write_text(text.replace("venue: Calthorpe Arms", "venue: Leeds Library"))
    await invite(store, tmp_path, smtp_server.port, "web", new=False)
    event = load_event(elsewhere)
    plan = lifecycle.plan_send(store, event=event, list_name="messy", new=False)
    assert (plan.audience, plan.already_invited) == (3, 0)
    campaign = lifecycle.start_send(store, plan, event=event, event_path=elsewhere, owner=None)
    await send(make_settings(tmp_path, smtp_server.port), store, campaign.id)
    assert Counter(smtp_server.recipients)["c@example.org"] == 2

    later = tmp_path / "events" / EVENT.name  # the same file name, a month later
    later.write_text(text.replace("2021-09-11T", "2021-10-09T"))
    moved = load_event(later)
    assert moved.slug == load_event(EVENT).slug
    plan = lifecycle.plan_send(store, event=moved, list_name="messy", new=True)
    assert plan.already_invited == 0


async def eventually(check: Callable[[], bool], polls: int = 1200) -> None:
    """Poll the store until `check` holds (the senders run on this loop meanwhile)."""
    for _ in range(polls):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the senders did not get there")


async def test_with_new_the_overlap_is_mailed_by_both_at_the_same_time(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """--new (mail them again) on the second campaign: its marking leaves nobody out."""
    two_lists(store, tmp_path)
    (web, _), (messy, _) = started_together(store, new=(False, True))
    settings = make_settings(tmp_path, smtp_server.port)
    await send(settings, store, web.id)
    await send(settings, store, messy.id)
    received = Counter(smtp_server.recipients)
    assert (received["c@example.org"], received["a@example.org"], received["e@example.org"]) == (
        2,
        1,
        1,
    )


async def test_a_dry_run_renders_whom_the_send_would_take(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """Not the whole list: the dry run to `messy` after `web` had it renders e alone (c
    and d are left out), and with --new all three."""
    two_lists(store, tmp_path)
    await invite(store, tmp_path, smtp_server.port, "web", new=False)
    settings = make_settings(tmp_path, smtp_server.port)
    event = load_event(EVENT)
    signer = load_signer(settings, store=store)
    for mail_again, rendered in ((False, 1), (True, 3)):
        report = dry_run(
            store,
            settings=settings,
            event=event,
            list_name="messy",
            signer=signer,
            mail_again=mail_again,
        )
        assert (report.messages, report.failures) == (rendered, [])


async def test_new_mails_them_too(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    two_lists(store, tmp_path)
    await invite(store, tmp_path, smtp_server.port, "web", new=False)
    assert await invite(store, tmp_path, smtp_server.port, "messy", new=True) == 3
    received = Counter(smtp_server.recipients)
    assert (received["c@example.org"], received["e@example.org"]) == (2, 1)


async def test_a_copy_of_the_event_file_sent_to_another_list_leaves_out_the_overlap(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """The event file copied under another name (same title and start) for the second
    list: the same event, so those the original reached are left out, at the plan (the
    count the organiser is shown) and in the ledger. Before, c and d got it twice."""
    two_lists(store, tmp_path)
    await invite(store, tmp_path, smtp_server.port, "web", new=False)
    copy = tmp_path / "events" / "meeting-for-messy.md"
    copy.parent.mkdir()
    copy.write_text(EVENT.read_text(encoding="utf-8"), encoding="utf-8")
    event = load_event(copy)
    plan = lifecycle.plan_send(store, event=event, list_name="messy", new=False)
    assert (plan.audience, plan.already_invited) == (1, 2)
    campaign = lifecycle.start_send(store, plan, event=event, event_path=copy, owner=None)
    await send(make_settings(tmp_path, smtp_server.port), store, campaign.id)
    received = Counter(smtp_server.recipients)
    assert received == Counter({f"{p}@example.org": 1 for p in "abcde"})
    assert rows(store, campaign.id)["c@example.org"] == (
        DeliveryStatus.SKIPPED.value,
        ALREADY_INVITED,
    )


async def test_a_copy_of_the_event_file_is_the_same_event(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """The event file copied under another name (same title and start): not a new event
    to the list it already reached; --new sends it anyway. Before, the whole list got it
    again without a word."""
    two_lists(store, tmp_path)
    await invite(store, tmp_path, smtp_server.port, "web", new=False)
    copy = tmp_path / "events" / "meeting-copy.md"
    copy.parent.mkdir()
    copy.write_text(EVENT.read_text(encoding="utf-8"), encoding="utf-8")
    event = load_event(copy)
    assert event.slug != load_event(EVENT).slug
    with pytest.raises(CampaignError, match="already went to 'web' from another file"):
        lifecycle.plan_send(store, event=event, list_name="web", new=False)
    with pytest.raises(CampaignError, match="from another file"):
        lifecycle.plan_schedule(store, event=event, list_name="web", new=False)
    assert lifecycle.plan_send(store, event=event, list_name="web", new=True).audience == 4
    assert len(smtp_server.recipients) == 4
