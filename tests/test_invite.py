"""The calendar invite: a METHOD:PUBLISH .ics that calendar apps import as-is."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import icalendar

from mailer.message.calendar import build_ics, event_uid, google_calendar_url
from mailer.message.event import load_event
from test_compose import EXAMPLE, make_builder


def test_example_ics_has_every_required_property() -> None:
    """PUBLISH, UID, DTSTAMP, zoned DTSTART/DTEND with a VTIMEZONE, and no ATTENDEE."""
    data = make_builder().ics
    cal = icalendar.Calendar.from_ical(data)
    assert cal["METHOD"] == "PUBLISH"
    [event] = cal.walk("VEVENT")
    [zone] = cal.walk("VTIMEZONE")
    assert zone["TZID"] == "Europe/London"
    assert event.decoded("DTSTART") == datetime(2021, 9, 11, 13, 30, tzinfo=UTC)
    assert event.decoded("DTEND") == datetime(2021, 9, 11, 15, 30, tzinfo=UTC)
    assert b"DTSTART;TZID=Europe/London:20210911T143000\r\n" in data
    assert "Calthorpe Arms, 252 Grays Inn Rd" in str(event["LOCATION"])
    assert "Russia: Revolution and" in str(event["DESCRIPTION"])
    assert str(event["ORGANIZER"]) == "mailto:events@leftcom.example"
    assert event["ORGANIZER"].params["CN"] == "Communist Workers' Organisation"
    assert str(event["URL"]).startswith("https://www.openstreetmap.org/")
    for name in ("UID", "DTSTAMP", "SUMMARY"):
        assert name in event
    assert "ATTENDEE" not in event
    assert all(len(line) <= 75 for line in data.split(b"\r\n"))
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_uid_is_stable_per_event() -> None:
    """The UID depends on the event, not on the campaign or when the .ics is built."""
    event = load_event(EXAMPLE)
    first = build_ics(event, domain="leftcom.example", description="", url="https://x.example/")
    later = build_ics(
        event,
        domain="leftcom.example",
        description="changed",
        url="https://x.example/",
        stamp=datetime(2030, 1, 1, tzinfo=UTC),
    )
    uids = {str(icalendar.Calendar.from_ical(d).walk("VEVENT")[0]["UID"]) for d in (first, later)}
    assert uids == {event_uid(event, domain="leftcom.example")}
    assert uids.pop().endswith("@leftcom.example")


def test_google_calendar_link_uses_utc_times() -> None:
    """14:30 BST is 13:30Z in the Google Calendar template link."""
    url = google_calendar_url(load_event(EXAMPLE), details="x")
    query = parse_qs(urlsplit(url).query)
    assert query["action"] == ["TEMPLATE"]
    assert query["dates"] == ["20210911T133000Z/20210911T153000Z"]
    assert query["ctz"] == ["Europe/London"]
