"""RSVP (issue 14) in process, on a real SQLite file and the real PostgreSQL: invitations
are sent to a real SMTP server, guests answer through the web app (httpx over ASGI), and
what the store holds, what the pages say and what the server received are checked.

The browser test (test_rsvp_browser.py) does the same as a person would, in Chromium.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from campaign_support import EVENT, SECRET, make_settings, seed_list, send
from mailer.campaigns import lifecycle
from mailer.config import Settings
from mailer.message.compose import InvitationBuilder
from mailer.message.event import load_event
from mailer.models import (
    AudienceFilter,
    CampaignStatus,
    MessageKind,
    Recipient,
    RsvpChoice,
    RsvpStatus,
    UnsubscribeSource,
)
from mailer.store import Store
from mailer.store.signer import load_signer
from mailer.tokens import TokenSigner
from mailer.web import create_app
from smtp_server import Received, SmtpTestServer
from test_events import run
from web_support import store_snapshot

RSVP_LINK = re.compile(r"https://mailer\.example\.org/r/[A-Za-z0-9_-]+")


def parts(data: bytes) -> tuple[str, str, str]:
    """(subject, text part, HTML part) of a received message."""
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None
    assert html is not None
    return str(message["Subject"]), str(text.get_content()), str(html.get_content())


def rsvp_path(received: Received) -> str:
    """The guest's RSVP page, from the text part of what the server received."""
    _, text, _ = parts(received.data)
    links: set[str] = set(RSVP_LINK.findall(text))
    assert len(links) == 1, links
    return links.pop().removeprefix("https://mailer.example.org")


def copy_event(tmp_path: Path, *, replace: dict[str, str] | None = None) -> Path:
    """The example event in tmp_path/events (optionally edited): its slug is the same."""
    text = EVENT.read_text(encoding="utf-8")
    for old, new in (replace or {}).items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "events" / EVENT.name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def future_event(tmp_path: Path) -> Path:
    """The example event ten years later: answers are open, its reminder still to come."""
    return copy_event(
        tmp_path,
        replace={
            "starts_at: 2021-09-11T14:30": "starts_at: 2031-09-11T14:30",
            "ends_at: 2021-09-11T16:30": "ends_at: 2031-09-11T16:30",
        },
    )


async def invite(
    store: Store, settings: Settings, event_file: Path, *, list_name: str = "members"
) -> int:
    event = load_event(event_file)
    plan = lifecycle.plan_send(store, event=event, list_name=list_name, new=True)
    campaign = lifecycle.start_send(store, plan, event=event, event_path=event_file, owner=None)
    result = await send(settings, store, campaign.id, event=event)
    assert result.campaign.status is CampaignStatus.FINISHED
    return campaign.id


def client(store: Store, settings: Settings, **options: object) -> httpx.AsyncClient:
    app = create_app(
        store=store,
        signer=load_signer(settings, store=store),
        settings=settings,
        **options,  # type: ignore[arg-type]
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=settings.base_url)


ORIGIN = {"Origin": "https://mailer.example.org"}


def test_links_appear_in_both_parts_only_when_the_event_takes_answers(tmp_path: Path) -> None:
    """An RSVP event's message has "I'll come", "Maybe" and "Can't come" links to the
    guest's page in its text and HTML parts; the same event without RSVP keys has none."""
    settings = make_settings(tmp_path, 2525)
    recipient = Recipient(1, "zoe@example.org", "Zoë Adeyemi", {})
    url = "https://mailer.example.org/r/TOKEN"
    for event_file, expected in (
        (EVENT, True),
        (
            copy_event(
                tmp_path,
                replace={
                    "capacity: 40\n": "",
                    "max_guests: 2\n": "",
                    'rsvp_note_prompt: "Access needs, or a copy of the book if you cannot '
                    'come?"\n': "",
                    "reminder: 1 day before\n": "",
                },
            ),
            False,
        ),
    ):
        event = load_event(event_file)
        assert event.rsvp_enabled is expected
        builder = InvitationBuilder(
            event,
            sender=settings.sender_identity,
            campaign_id=1,
            list_name="members",
            templates_dir=settings.templates_dir,
        )
        rsvp = url if event.rsvp_enabled else None
        message = builder.build(
            recipient, unsubscribe_url="https://mailer.example.org/u/x", rsvp_url=rsvp
        )
        _, text, html = parts(message.data)
        for answer, label in (("yes", "I'll come"), ("maybe", "Maybe"), ("no", "Can't come")):
            in_text = re.search(rf"^{re.escape(label)}:\s+{url}\?answer={answer}\r?$", text, re.M)
            in_html = re.search(
                rf'<a [^>]*href="{url}\?answer={answer}"[^>]*>{re.escape(label)}', html
            )
            assert (in_text is not None) is expected, (label, text)
            assert (in_html is not None) is expected, label
        assert ("/r/" in text) is expected


async def test_guests_answer_change_and_the_store_follows(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """GET shows the page and changes nothing; the page's POST records one answer per
    guest and event (a second click changes nothing); answers change until they close;
    forged links get 404; the link works after unsubscribing; erasing the guest erases it."""
    settings = make_settings(tmp_path, smtp_server.port)
    seed_list(store, tmp_path, 3)
    await invite(store, settings, EVENT)
    ana, bob, _ = smtp_server.messages
    path = rsvp_path(ana)
    ana_id = store.get_subscriber_id(ana.rcpt_tos[0])
    slug = load_event(EVENT).slug
    closes = load_event(EVENT).starts_at
    now = [closes - timedelta(days=3)]
    async with client(store, settings, now=lambda: now[0]) as web:
        before = store_snapshot(store)
        page = await web.get(path + "?answer=yes")
        assert page.status_code == 200
        assert "Your answer: <strong>none yet</strong>" in page.text
        assert "Access needs, or a copy of the book" in page.text
        for header in ("content-security-policy", "x-frame-options", "referrer-policy"):
            assert header in page.headers
        assert store_snapshot(store) == before  # a scanner's GET records nothing

        answered = await web.post(
            path, data={"answer": "yes", "guests": "1", "note": "=1+1 wheelchair"}, headers=ORIGIN
        )
        assert answered.status_code == 200
        assert "you are coming, with 1 guest" in answered.text
        assert "/c/" in answered.text  # the .ics is offered
        rsvp = store.get_rsvp(slug, ana_id)
        assert rsvp is not None
        assert (rsvp.status, rsvp.guests, rsvp.note) == (RsvpStatus.YES, 1, "=1+1 wheelchair")
        assert store.rsvp_counts(slug).places_taken == 2

        settled = store_snapshot(store)
        again = await web.post(
            path, data={"answer": "yes", "guests": "1", "note": "=1+1 wheelchair"}, headers=ORIGIN
        )
        assert "already recorded" in again.text
        assert store_snapshot(store) == settled  # recorded once, whatever the clicks

        # Too many guests, an unknown answer, another site's form: refused, unchanged.
        for data, headers, status in (
            ({"answer": "yes", "guests": "3"}, ORIGIN, 400),
            ({"answer": "perhaps"}, ORIGIN, 400),
            ({"answer": "no"}, {"Origin": "https://evil.example.net"}, 403),
            ({"answer": "no"}, {"Sec-Fetch-Site": "cross-site"}, 403),
        ):
            refused = await web.post(path, data=data, headers=headers)
            assert refused.status_code == status, data
        assert store_snapshot(store) == settled

        # Forged and altered links: the one 404, nothing changed.
        token = path.removeprefix("/r/")
        altered = token[:8] + ("A" if token[8] != "A" else "B") + token[9:]
        unsubscribe_kind = TokenSigner(SECRET.encode()).sign(subscriber_id=ana_id, list_id=1)
        other_key = TokenSigner(b"another-key-0123456789abcdef").sign_rsvp(
            subscriber_id=ana_id, campaign_id=1
        )
        for bad in (altered, token[:-2], unsubscribe_kind, other_key, "garbage"):
            assert (await web.get(f"/r/{bad}")).status_code == 404
            assert (await web.post(f"/r/{bad}", data={"answer": "no"})).status_code == 404
        assert store_snapshot(store) == settled

        # Unsubscribing from the list does not stop the answer page (answering is not
        # subscribing), and the answer can change.
        store.unsubscribe(ana_id, store.list_id("members"), source=UnsubscribeSource.PAGE)
        changed = await web.post(path, data={"answer": "no"}, headers=ORIGIN)
        assert changed.status_code == 200
        assert "cannot come" in changed.text
        counts = store.rsvp_counts(slug, list_id=store.list_id("members"))
        assert (counts.yes, counts.no, counts.places_taken) == (0, 1, 0)

        # Closed: the page says so, and a POST changes nothing.
        now[0] = closes + timedelta(minutes=1)
        closed = await web.get(path)
        assert "Answers closed" in closed.text
        assert "<form" not in closed.text
        frozen = store_snapshot(store)
        late = await web.post(path, data={"answer": "yes"}, headers=ORIGIN)
        assert late.status_code == 403
        assert store_snapshot(store) == frozen

        # Erasing the guest erases the answer; the link is then a 404.
        store.remove_subscriber(ana.rcpt_tos[0])
        assert store.get_rsvp(slug, ana_id) is None
        assert (await web.get(path)).status_code == 404
    assert bob.rcpt_tos != ana.rcpt_tos


async def test_50_concurrent_yes_for_40_places_and_the_first_waiting_moves_up(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """50 guests press "I'll come" at once for capacity 40: exactly 40 places taken and
    10 waiting. One of the 40 changes to "can't come": the first on the waiting list
    moves up, and a short message telling them so reaches the SMTP server."""
    settings = make_settings(tmp_path, smtp_server.port)
    addresses = seed_list(store, tmp_path, 50)
    campaign_id = await invite(store, settings, future_event(tmp_path))
    paths = {m.rcpt_tos[0]: rsvp_path(m) for m in smtp_server.messages}
    assert len(paths) == 50
    slug = load_event(EVENT).slug
    invitations = len(smtp_server.messages)
    async with client(store, settings) as web:
        answers = await asyncio.gather(
            *(web.post(paths[a], data={"answer": "yes"}, headers=ORIGIN) for a in addresses)
        )
        assert all(r.status_code == 200 for r in answers)
        counts = store.rsvp_counts(slug)
        assert (counts.yes, counts.waiting, counts.places_taken) == (40, 10, 40)
        assert sum("waiting list" in r.text for r in answers) == 10

        waiting = [a for a in addresses if "waiting list" in (await web.get(paths[a])).text]
        first = min(
            waiting,
            key=lambda a: store.waiting_position(slug, store.get_subscriber_id(a)) or 99,
        )
        leaving = next(a for a in addresses if a not in waiting)
        await web.post(paths[leaving], data={"answer": "no"}, headers=ORIGIN)
        counts = store.rsvp_counts(slug)
        assert (counts.yes, counts.waiting, counts.no, counts.places_taken) == (40, 9, 1, 40)
        promoted = store.get_rsvp(slug, store.get_subscriber_id(first))
        assert promoted is not None
        assert promoted.status is RsvpStatus.YES
        assert counts.untold == 0
    (notice,) = smtp_server.messages[invitations:]
    assert notice.rcpt_tos == [first]
    text = notice.data.decode()
    assert "Subject: You have a place:" in text
    assert "Auto-Submitted: auto-generated" in text
    assert "/r/" in text
    assert f"campaign {campaign_id}" not in text


async def test_reminder_update_and_nudge_reach_exactly_whom_they_name(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """`reminder: 1 day before` schedules a reminder when the invitation goes; it reaches
    exactly those who answered yes or maybe, never twice; --only no-answer nudges the
    rest; --message update raises the calendar entry's SEQUENCE."""
    settings = make_settings(tmp_path, smtp_server.port)
    addresses = seed_list(store, tmp_path, 6)
    event_file = future_event(tmp_path)
    event = load_event(event_file)
    invitation = await invite(store, settings, event_file)
    list_id = store.list_id("members")
    reminder = lifecycle.pending_reminder(store, event, list_id)
    assert reminder is not None
    assert reminder.id != invitation
    assert reminder.message is MessageKind.REMINDER
    assert reminder.audience_filter == frozenset({AudienceFilter.YES, AudienceFilter.MAYBE})
    assert reminder.scheduled_at == datetime(2031, 9, 10, 13, 30, tzinfo=UTC)

    slug = event.slug
    answers = {0: RsvpChoice.YES, 1: RsvpChoice.MAYBE, 2: RsvpChoice.NO, 3: RsvpChoice.YES}
    for index, choice in answers.items():
        store.record_rsvp(
            event_slug=slug,
            subscriber_id=store.get_subscriber_id(addresses[index]),
            campaign_id=invitation,
            choice=choice,
            guests=0,
            note="",
            capacity=event.capacity,
            now=datetime.now(UTC),
        )
    sent_before = len(smtp_server.messages)
    result = await send(settings, store, reminder.id, early=True)  # the worker's job, now
    assert result.campaign.status is CampaignStatus.FINISHED
    reminded = smtp_server.messages[sent_before:]
    assert sorted(m.rcpt_tos[0] for m in reminded) == sorted(addresses[i] for i in (0, 1, 3))
    subject, text, _ = parts(reminded[0].data)
    assert subject.startswith("Reminder: ")
    assert "This is a reminder" in text
    assert "I'll come:" in text  # they can still change their answer

    # The same reminder again (a second `--message reminder`): nobody twice.
    plan = lifecycle.plan_send(
        store, event=event, list_name="members", new=False, message=MessageKind.REMINDER
    )
    assert plan.audience == 0

    # Those who have not answered get a nudge (the invitation again).
    nudge = lifecycle.plan_send(
        store,
        event=event,
        list_name="members",
        new=False,
        only=frozenset({AudienceFilter.NO_ANSWER}),
    )
    assert nudge.audience == 2
    campaign = lifecycle.start_send(store, nudge, event=event, event_path=event_file, owner=None)
    sent_before = len(smtp_server.messages)
    await send(settings, store, campaign.id, event=event)
    nudged = smtp_server.messages[sent_before:]
    assert sorted(m.rcpt_tos[0] for m in nudged) == sorted(addresses[4:])

    # An update to yes and maybe carries a higher SEQUENCE than the invitation.
    update = lifecycle.plan_send(
        store,
        event=event,
        list_name="members",
        new=False,
        message=MessageKind.UPDATE,
        only=frozenset({AudienceFilter.YES, AudienceFilter.MAYBE}),
    )
    campaign = lifecycle.start_send(store, update, event=event, event_path=event_file, owner=None)
    sent_before = len(smtp_server.messages)
    await send(settings, store, campaign.id, event=event)
    updated = smtp_server.messages[sent_before:]
    assert len(updated) == 3
    sequence = re.compile(rb"SEQUENCE:(\d+)")

    def sequence_of(received: Received) -> int:
        message = message_from_bytes(received.data, policy=policy.default)
        assert isinstance(message, EmailMessage)
        for part in message.walk():
            if part.get_content_type() == "text/calendar":
                payload = part.get_payload(decode=True)
                assert isinstance(payload, bytes)
                found = sequence.search(payload)
                assert found is not None
                return int(found.group(1))
        raise AssertionError("no calendar part")

    assert sequence_of(updated[0]) > sequence_of(smtp_server.messages[0])
    assert parts(updated[0].data)[0].startswith("Update: ")


def test_cli_counts_csv_report_and_the_reminder(
    tmp_path: Path,
    smtp_server_thread: SmtpTestServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`mailer rsvps` counts the answers, `--csv` lists them spreadsheet-safe, `campaign
    report` shows the same figures, and `mailer send --only yes,maybe --message reminder`
    reaches exactly those (counted at the server)."""
    settings = make_settings(tmp_path, smtp_server_thread.port)
    for name, value in {
        "MAILER_DATABASE_URL": settings.database_url,
        "MAILER_VAR_DIR": str(tmp_path / "var"),
        "MAILER_SMTP_PORT": str(smtp_server_thread.port),
        "MAILER_SECRET_KEY": SECRET,
        "MAILER_TEMPLATES_DIR": str(settings.templates_dir),
        "MAILER_FROM_ADDRESS": "invitations@cwo.example.org",
        "MAILER_BASE_URL": "https://mailer.example.org",
        "COLUMNS": "200",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    with Store.open(settings.database_url) as store:
        addresses = seed_list(store, tmp_path, 4)
    assert run(["send", str(EVENT), "--list", "members", "--yes"]) == 0
    event = load_event(EVENT)
    with Store.open(settings.database_url) as store:
        ids = [store.get_subscriber_id(a) for a in addresses]
        for subscriber_id, choice, guests, note in (
            (ids[0], RsvpChoice.YES, 2, "=HYPERLINK(1)"),
            (ids[1], RsvpChoice.MAYBE, 0, ""),
        ):
            store.record_rsvp(
                event_slug=event.slug,
                subscriber_id=subscriber_id,
                campaign_id=1,
                choice=choice,
                guests=guests,
                note=note,
                capacity=event.capacity,
                now=datetime.now(UTC),
            )
    capsys.readouterr()
    assert run(["rsvps", str(EVENT), "--list", "members"]) == 0
    counts = capsys.readouterr().out
    assert re.search(r"yes:\s+1 with 2 guest\(s\): 3 of 40 places taken", counts)
    assert re.search(r"maybe:\s+1", counts)
    assert re.search(r"no answer:\s+2", counts)
    assert run(["rsvps", str(EVENT), "--csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["name", "address", "answer", "guests", "note", "answered_at"]
    assert rows[1][:5] == ["Person 0", addresses[0], "yes", "2", "'=HYPERLINK(1)"]
    assert rows[2][2] == "maybe"
    assert run(["campaign", "report", "1"]) == 0
    assert re.search(r"yes:\s+1 with 2 guest\(s\): 3 of 40 places taken", capsys.readouterr().out)

    before = len(smtp_server_thread.messages)
    argv = ["send", str(EVENT), "--list", "members", "--only", "yes,maybe"]
    # The dry run renders whom the reminder goes to, not the whole list (a review).
    assert run([*argv, "--message", "reminder", "--dry-run"]) == 0
    assert "Dry run: 2 messages rendered" in capsys.readouterr().out
    assert run([*argv, "--message", "reminder", "--yes"]) == 0
    reminded = smtp_server_thread.messages[before:]
    assert sorted(m.rcpt_tos[0] for m in reminded) == sorted(addresses[:2])
    assert run([*argv, "--message", "reminded"]) == 2  # a typo: one line, exit 2
    assert "--message 'reminded'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("front", "body", "problem"),
    [
        ("rsvp: false\ncapacity: 10\n", "", "rsvp: false, yet capacity given"),
        ("reminder: tomorrow\n", "\n--- reminder ---\nSoon.\n", "write it like '1 day before'"),
        ("reminder: 2 days before\n", "", "no '--- reminder ---' section"),
        ("max_guests: 50\n", "", "max_guests"),
        ("capacity: 0\n", "", "capacity"),
        ("rsvp_closes: 2021-09-12T10:00\n", "", "rsvp_closes: must not be after the event"),
        ("", "\n--- reminder ---\nA\n--- reminder ---\nB\n", "'--- reminder ---' appears twice"),
    ],
)
def test_rsvp_front_matter_mistakes_name_the_problem(
    tmp_path: Path, front: str, body: str, problem: str
) -> None:
    """Each RSVP mistake in an event file is refused with what is wrong (and its line)."""
    from mailer.message.event import parse_event

    text = EVENT.read_text(encoding="utf-8").split("\n--- reminder ---\n")[0]
    text = "".join(
        line
        for line in text.splitlines(keepends=True)
        if not line.startswith(("reminder:", "capacity:", "max_guests:", "rsvp_note_prompt:"))
    )
    path = tmp_path / "event.md"
    path.write_text(text.replace("layout: default\n", "layout: default\n" + front) + body)
    _event, errors = parse_event(path)
    assert errors, problem
    assert any(problem in str(error) for error in errors), [str(e) for e in errors]


def test_rsvp_tokens_are_their_own_kind_and_their_paths_are_redacted() -> None:
    """An RSVP token verifies only as one (never as an unsubscribe link, and the other
    way), survives key rotation, and access logs never show it."""
    from mailer.errors import TokenError
    from mailer.tokens import RsvpClaims
    from mailer.web.security import redact_path

    old, new = TokenSigner(b"old-key-0123456789abcdef"), b"new-key-0123456789abcdef"
    token = old.sign_rsvp(subscriber_id=7, campaign_id=3)
    rotated = TokenSigner(new, fallbacks=[b"old-key-0123456789abcdef"])
    assert rotated.verify_rsvp(token) == RsvpClaims(subscriber_id=7, campaign_id=3)
    with pytest.raises(TokenError):
        rotated.verify_link(token)
    with pytest.raises(TokenError):
        rotated.verify_rsvp(old.sign(subscriber_id=7, list_id=3))
    assert redact_path(f"/r/{token}") == "/r/<redacted>"


def test_scheduling_the_invitation_schedules_its_reminder_once(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """`mailer schedule` of an event with `reminder: 1 day before` also schedules the
    reminder (to yes and maybe), through the same lifecycle; scheduling the invitation
    again (--new) does not add a second reminder, and a reminder whose time is before
    the invitation's is not scheduled at all."""
    store = sqlite_store
    seed_list(store, tmp_path, 2)
    event_file = future_event(tmp_path)
    event = load_event(event_file)
    when = datetime(2031, 9, 1, 9, 0, tzinfo=UTC)
    for new in (False, True):
        plan = lifecycle.plan_schedule(store, event=event, list_name="members", new=new)
        lifecycle.schedule(store, plan, event=event, event_path=event_file, when=when)
    reminders = [c for c in store.campaigns() if c.message is MessageKind.REMINDER]
    assert len(reminders) == 1
    assert reminders[0].status is CampaignStatus.SCHEDULED
    assert reminders[0].scheduled_at == datetime(2031, 9, 10, 13, 30, tzinfo=UTC)
    assert reminders[0].subject.startswith("Reminder: ")
    seed_list(store, tmp_path, 1, list_name="others")
    others = store.list_id("others")
    after_it = datetime(2031, 9, 11, tzinfo=UTC)
    assert lifecycle.schedule_reminder(store, event, event_file, others, after=after_it) is None
    assert lifecycle.schedule_reminder(store, event, event_file, others, after=when) is not None


def test_places_with_guests_are_kept_fair(sqlite_store: Store, tmp_path: Path) -> None:
    """Guests count against capacity; someone with a place who asks for more guests than
    are free keeps their place as it was; places freed go to those waiting in order, each
    whose party fits (a party too big for them waits on, first in line); with no capacity
    left in the file, everyone waiting moves up."""
    store = sqlite_store
    addresses = seed_list(store, tmp_path, 4)
    ana, bob, cleo, dan = (store.get_subscriber_id(a) for a in addresses)
    now = datetime(2031, 1, 1, tzinfo=UTC)

    def answer(who: int, choice: RsvpChoice, guests: int = 0, capacity: int | None = 4) -> bool:
        outcome = store.record_rsvp(
            event_slug="meeting",
            subscriber_id=who,
            campaign_id=1,
            choice=choice,
            guests=guests,
            note="",
            capacity=capacity,
            now=now,
        )
        return outcome.refused_guests

    assert not answer(ana, RsvpChoice.YES, 2)  # 3 of 4 places
    assert answer(ana, RsvpChoice.YES, 4)  # 5 would not fit: she keeps 1 + 2
    kept = store.get_rsvp("meeting", ana)
    assert kept is not None
    assert (kept.status, kept.guests) == (RsvpStatus.YES, 2)
    answer(bob, RsvpChoice.YES, 1)  # needs 2, 1 free: waits
    answer(cleo, RsvpChoice.YES, 0)  # needs 1, 1 free: fits (the waiting list is for who waits)
    answer(dan, RsvpChoice.YES, 0)  # full: waits behind Bob
    assert store.rsvp_counts("meeting").places_taken == 4
    answer(cleo, RsvpChoice.MAYBE)  # 1 free: Bob (2) is first but does not fit; Dan does
    counts = store.rsvp_counts("meeting")
    assert (counts.yes, counts.waiting, counts.maybe, counts.places_taken) == (2, 1, 1, 4)
    assert store.waiting_position("meeting", bob) == 1
    assert store.waiting_position("meeting", dan) is None
    answer(cleo, RsvpChoice.NO, capacity=None)  # the capacity left the file
    counts = store.rsvp_counts("meeting")
    assert (counts.yes, counts.waiting, counts.no) == (3, 0, 1)


async def test_the_dashboard_report_shows_the_answers(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """The campaign's report in the dashboard has the same figures as `campaign report`:
    coming (with guests and places), waiting, maybe, can't come, no answer."""
    from admin_support import add_user, admin_app, admin_client, sign_in

    settings = make_settings(tmp_path, smtp_server.port)
    seed_list(store, tmp_path, 3)
    event_file = future_event(tmp_path)
    campaign_id = await invite(store, settings, event_file)
    ana, bob, _ = smtp_server.messages
    async with client(store, settings) as web:
        for received, answer in ((ana, {"answer": "yes", "guests": "1"}), (bob, {"answer": "no"})):
            assert (await web.post(rsvp_path(received), data=answer, headers=ORIGIN)).is_success
    add_user(store, "ana")
    async with admin_client(admin_app(store)) as admin:
        await sign_in(admin, "ana")
        report = await admin.get(f"/admin/campaigns/{campaign_id}/report")
    assert report.status_code == 200
    answers = report.text.split('<h2 id="answers-h">Answers</h2>', 1)[1].split("</section>")[0]
    cells = [" ".join(row.split()) for row in re.findall(r"<tr>(.*?)</tr>", answers, re.S)]
    numbers = [re.findall(r'<td class="num">([\d,]*)</td>', row) for row in cells[1:]]
    assert numbers == [["1", "1"], ["0", "0"], ["0", "0"], ["1", ""], ["1", ""]]
    assert "2 of 40 places taken" in answers
