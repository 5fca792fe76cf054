"""The calendar invite: a METHOD:PUBLISH .ics that calendar apps import as-is, and the
"add to calendar" links in the message."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import icalendar
import pytest

from mailer.errors import UnsafeValueError
from mailer.message.calendar import (
    build_ics,
    event_uid,
    google_calendar_url,
    outlook_calendar_url,
    revision,
    schedule_key,
)
from mailer.message.compose import InvitationBuilder
from mailer.message.event import load_event
from test_compose import EXAMPLE, SENDER, TEMPLATES, ZOE, make_builder, unsubscribe_url

ICS_URL = "https://lists.leftcom.example/c/AwE4mQ7hJk2Yf0pZs1u9XcVbNl.ics"


def linked_builder(*, sequence: int = 0) -> InvitationBuilder:
    """The example with the campaign's .ics link, as a real send has it."""
    return InvitationBuilder(
        load_event(EXAMPLE),
        sender=SENDER,
        campaign_id=42,
        list_name="CWO London",
        templates_dir=TEMPLATES,
        sequence=sequence,
        ics_url=ICS_URL,
    )


def vevent(data: bytes) -> icalendar.Event:
    [event] = icalendar.Calendar.from_ical(data).walk("VEVENT")
    assert isinstance(event, icalendar.Event)
    return event


def test_example_ics_has_every_required_property() -> None:
    """PUBLISH, UID, DTSTAMP, SEQUENCE, zoned DTSTART/DTEND with a VTIMEZONE, no ATTENDEE."""
    data = make_builder().ics
    cal = icalendar.Calendar.from_ical(data)
    assert cal["METHOD"] == "PUBLISH"
    event = vevent(data)
    [zone] = cal.walk("VTIMEZONE")
    assert zone["TZID"] == "Europe/London"
    assert event.decoded("DTSTART") == datetime(2021, 9, 11, 13, 30, tzinfo=UTC)
    assert event.decoded("DTEND") == datetime(2021, 9, 11, 15, 30, tzinfo=UTC)
    assert b"DTSTART;TZID=Europe/London:20210911T143000\r\n" in data
    assert "Calthorpe Arms, 252 Grays Inn Rd" in str(event["LOCATION"])
    assert str(event["ORGANIZER"]) == "mailto:events@leftcom.example"
    assert event["ORGANIZER"].params["CN"] == "Communist Workers' Organisation"
    assert str(event["URL"]).startswith("https://www.openstreetmap.org/")
    assert b"\r\nSEQUENCE:0\r\n" in data
    for name in ("UID", "DTSTAMP", "SUMMARY"):
        assert name in event
    assert "ATTENDEE" not in event
    assert all(len(line) <= 75 for line in data.split(b"\r\n"))
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_description_is_the_event_summary_not_the_letter() -> None:
    """DESCRIPTION says what, when, where, who and links, the same for everyone; not the
    body rendered for nobody ("Dear comrade, ... in  and hold a  ticket")."""
    description = str(vevent(make_builder().ics)["DESCRIPTION"])
    assert description.splitlines() == [
        "CWO London Public Meeting: Russia, Revolution and Counter-Revolution",
        "When: Saturday 11 September 2021, 2:30pm to 4:30pm BST",
        "Where: Calthorpe Arms, 252 Grays Inn Rd, London, WC1X 8JR",
        "Organiser: Communist Workers' Organisation <events@leftcom.example>",
        "Map: https://www.openstreetmap.org/search?query=252%20Grays%20Inn%20Rd%20London"
        "%20WC1X%208JR",
    ]


def test_description_of_a_letter_with_personal_fields_has_no_holes(tmp_path: Path) -> None:
    """A body full of subscriber columns leaves no trace in the .ics."""
    source = EXAMPLE.read_text(encoding="utf-8")
    front, body = source.split("\n---\n", 1)
    personal = tmp_path / "personal.md"
    letter = "We see you are in {{ subscriber.attributes.city }} and hold a "
    letter += "{{ subscriber.attributes.ticket }} ticket.\n\n"
    personal.write_text(f"{front}\n---\n{letter}{body}", encoding="utf-8")
    description = str(vevent(make_builder(event_path=personal).ics)["DESCRIPTION"])
    assert "  " not in description
    assert "ticket" not in description
    assert "Dear" not in description


def test_an_online_event_says_where_to_join() -> None:
    """An online-only event: "Where: online" and its join link in DESCRIPTION, the link
    as LOCATION; changing the link is a change of place for SEQUENCE."""
    event = load_event(EXAMPLE).model_copy(
        update={"venue": None, "address": None, "online_url": "https://meet.example.org/cwo"}
    )
    description = str(
        vevent(build_ics(event, domain="x.example", url="https://x.example/"))["DESCRIPTION"]
    )
    assert "Where: online" in description.splitlines()
    assert "Join online: https://meet.example.org/cwo" in description.splitlines()
    moved = event.model_copy(update={"online_url": "https://meet.example.org/other"})
    assert schedule_key(moved) != schedule_key(event)


def test_sequence_is_written_and_raised_by_the_caller() -> None:
    """SEQUENCE is what the caller passes (0 by default): a later invite with the same UID
    and a higher SEQUENCE replaces the entry; a negative one is refused."""
    event = load_event(EXAMPLE)
    later = build_ics(event, domain="leftcom.example", url="https://x.example/", sequence=3)
    assert b"\r\nSEQUENCE:3\r\n" in later
    assert vevent(later)["SEQUENCE"] == 3
    assert b"\r\nSEQUENCE:2\r\n" in linked_builder(sequence=2).ics
    with pytest.raises(ValueError, match="negative"):
        build_ics(event, domain="leftcom.example", url="https://x.example/", sequence=-1)


def test_revision_counts_changes_of_time_or_place() -> None:
    """The schedule key changes with the time or the place, not with the wording; the
    revision counts changes along the campaigns of one event, in order."""
    event = load_event(EXAMPLE)
    key = schedule_key(event)
    assert schedule_key(event.model_copy(update={"title": "Renamed", "description": "x"})) == key
    moved = event.model_copy(update={"starts_at": event.starts_at.replace(hour=15)})
    assert schedule_key(moved) != key
    assert schedule_key(event.model_copy(update={"venue": "Another pub"})) != key
    assert revision([]) == 0
    assert revision(["a"]) == 0
    assert revision(["a", "a"]) == 0  # sent again to another list: same entry
    assert revision(["a", "b"]) == 1
    assert revision(["a", "a", "b", "b", "a"]) == 2  # moved, then moved back


def test_uid_is_stable_per_event() -> None:
    """The UID depends on the event, not on the campaign, the sequence or the build time."""
    event = load_event(EXAMPLE)
    first = build_ics(event, domain="leftcom.example", url="https://x.example/")
    later = build_ics(
        event,
        domain="leftcom.example",
        url="https://x.example/",
        sequence=4,
        stamp=datetime(2030, 1, 1, tzinfo=UTC),
    )
    uids = {str(vevent(d)["UID"]) for d in (first, later)}
    assert uids == {event_uid(event, domain="leftcom.example")}
    assert uids.pop().endswith("@leftcom.example")


def test_calendar_part_is_named_on_its_content_type() -> None:
    """The raw part header carries name="invite.ics" too, for clients that ignore
    Content-Disposition."""
    data = make_builder().build(ZOE, unsubscribe_url=unsubscribe_url(ZOE)).data
    assert (
        b'\r\nContent-Type: text/calendar; charset="utf-8"; method=PUBLISH; name="invite.ics"\r\n'
        in data
    )
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    [calendar] = [p for p in parsed.walk() if p.get_content_type() == "text/calendar"]
    assert calendar.get_param("name") == "invite.ics"
    assert calendar.get_filename() == "invite.ics"


def test_google_calendar_link_uses_utc_times() -> None:
    """14:30 BST is 13:30Z in the Google Calendar template link."""
    url = google_calendar_url(load_event(EXAMPLE), details="x")
    query = parse_qs(urlsplit(url).query)
    assert query["action"] == ["TEMPLATE"]
    assert query["dates"] == ["20210911T133000Z/20210911T153000Z"]
    assert query["ctz"] == ["Europe/London"]


def test_outlook_link_fills_in_the_event_in_utc() -> None:
    """The Outlook.com deep link: compose an event, times in UTC, title and place."""
    url = outlook_calendar_url(load_event(EXAMPLE), details="Organised by CWO.")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("https", "outlook.live.com")
    assert parts.path == "/calendar/0/deeplink/compose"
    query = parse_qs(parts.query)
    assert query["rru"] == ["addevent"]
    assert query["path"] == ["/calendar/action/compose"]
    assert query["startdt"] == ["2021-09-11T13:30:00Z"]
    assert query["enddt"] == ["2021-09-11T15:30:00Z"]
    assert query["subject"] == [load_event(EXAMPLE).title]
    assert query["location"] == ["Calthorpe Arms, 252 Grays Inn Rd, London, WC1X 8JR"]
    assert query["body"] == ["Organised by CWO."]
    assert "+" not in parts.query  # spaces as %20: Outlook shows a '+' literally


def test_html_offers_google_outlook_and_the_ics_link() -> None:
    """The HTML part links all three ways to add the event."""
    html = linked_builder().render(ZOE, unsubscribe_url=unsubscribe_url(ZOE)).html
    assert 'href="https://calendar.google.com/calendar/render?action=TEMPLATE&amp;' in html
    assert 'href="https://outlook.live.com/calendar/0/deeplink/compose?' in html
    assert f'href="{ICS_URL}"' in html


def test_text_part_prefers_the_short_ics_link() -> None:
    """The text part gives the short .ics link on a line of its own instead of the
    434-character Google URL (checked on the decoded part of the message as sent)."""
    builder = linked_builder()
    data = builder.build(ZOE, unsubscribe_url=unsubscribe_url(ZOE)).data
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    plain = parsed.get_body(("plain",))
    assert plain is not None
    lines = plain.get_content().replace("\r\n", "\n").splitlines()
    assert ICS_URL in lines
    assert lines[lines.index(ICS_URL) - 1] == "Add to calendar:"
    assert not any("calendar.google.com" in line for line in lines)
    # Only the event's own map link (a single URL, unbreakable) may be longer.
    map_url = load_event(EXAMPLE).map_url
    assert all(len(line) <= 78 or line == map_url for line in lines)


def test_ics_url_must_be_a_plain_http_url() -> None:
    """The link goes into an href and a text line: anything but a plain URL is refused."""
    for bad in ("javascript:alert(1)", 'https://x.example/c/a".ics', "https://x.example/\n"):
        with pytest.raises(UnsafeValueError, match="ics_url"):
            InvitationBuilder(
                load_event(EXAMPLE),
                sender=SENDER,
                campaign_id=42,
                list_name="CWO London",
                templates_dir=TEMPLATES,
                ics_url=bad,
            )
