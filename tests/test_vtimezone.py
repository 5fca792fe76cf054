"""The invite's VTIMEZONE: every change of the event's year where zoneinfo has it.

Read back by two parsers that share no code with ours: python-dateutil's `tzical` (an
icalendar dependency, so always installed) converts UTC instants through the VTIMEZONE,
and icalendar's own `Timezone.get_transitions()` lists the changes it reads from it.
The truth they are held to is zoneinfo, scanned minute by minute around each change, a
different search from the one vtimezone.py does.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import icalendar
import pytest
from dateutil import tz

from mailer.message.calendar import build_ics
from mailer.message.event import Event

Offset = Callable[[datetime], timedelta]

# (zone, a local start time): each zone stands for a way zones change.
CASES = [
    ("Europe/London", "2021-09-11T14:30"),  # the example; spring change at 01:00 UTC
    ("America/New_York", "2021-07-04T18:00"),
    ("Australia/Sydney", "2021-06-05T10:00"),  # southern: summer time over New Year
    ("Asia/Kolkata", "2021-03-01T18:00"),  # no DST
    ("America/New_York", "2007-05-01T19:00"),  # the US rule changed in 2007
    ("America/Sao_Paulo", "2019-06-01T19:00"),  # DST abolished in 2019
    ("Europe/Dublin", "2021-05-01T19:00"),  # tzdata's negative DST (winter is "DST")
    ("Africa/Casablanca", "2021-03-01T19:00"),  # changes around Ramadan, no yearly rule
]
IDS = [f"{zone}-{start[:4]}" for zone, start in CASES]


def make_event(zone: str, start: str) -> Event:
    return Event.model_validate(
        {
            "title": "Meeting",
            "subject": "Meeting",
            "timezone": zone,
            "starts_at": start,
            "venue": "Hall",
            "address": "1 Street",
            "organiser": {"name": "Org", "email": "org@example.org"},
            "slug": "meeting",
        }
    )


def zoneinfo_changes(zone: str, year: int) -> list[datetime]:
    """The first UTC minute of each new offset in `year`, scanned from zoneinfo."""
    info, changes = ZoneInfo(zone), []
    hour = datetime(year, 1, 1, tzinfo=UTC)
    while hour.year == year:
        before = hour.astimezone(info).utcoffset()
        if (hour + timedelta(hours=1)).astimezone(info).utcoffset() != before:
            minute = hour
            while minute.astimezone(info).utcoffset() == before:
                minute += timedelta(minutes=1)
            changes.append(minute)
        hour += timedelta(hours=1)
    return changes


def dateutil_offset(data: bytes, zone: str) -> Offset:
    parsed = tz.tzical(io.StringIO(data.decode("utf-8"))).get(zone)
    assert parsed is not None

    def offset(instant: datetime) -> timedelta:
        value = instant.astimezone(parsed).utcoffset()
        assert value is not None
        return value

    return offset


def icalendar_offset(data: bytes) -> Offset:
    [component] = icalendar.Calendar.from_ical(data).walk("VTIMEZONE")
    assert isinstance(component, icalendar.Timezone)
    times, infos = component.get_transitions()  # naive UTC, (TZOFFSETTO, dst, name)

    def offset(instant: datetime) -> timedelta:
        naive = instant.astimezone(UTC).replace(tzinfo=None)
        before = [info for time, info in zip(times, infos, strict=True) if time <= naive]
        assert before, f"the VTIMEZONE says nothing about {instant}"
        to: timedelta = before[-1][0]
        return to

    return offset


@pytest.mark.parametrize(("zone", "start"), CASES, ids=IDS)
def test_every_change_of_the_year_matches_zoneinfo(zone: str, start: str) -> None:
    """Just before and at each change, and every three hours of the year, both parsers
    give zoneinfo's offset. (icalendar's own VTIMEZONE put London's spring change at
    02:00 UTC: dateutil read 01:30Z on 28 March 2021 as +00:00.)"""
    event = make_event(zone, start)
    data = build_ics(event, domain="example.org", url="https://example.org/")
    year = event.starts_at.year
    changes = zoneinfo_changes(zone, year)
    if zone != "Asia/Kolkata":
        assert changes, "the case should have changes to check"
    instants = [datetime(year, 1, 1, tzinfo=UTC) + timedelta(hours=h) for h in range(0, 8760, 3)]
    for change in changes:
        instants += [change - timedelta(minutes=1), change]
    info = ZoneInfo(zone)
    for reader, offset in (
        ("dateutil", dateutil_offset(data, zone)),
        ("icalendar", icalendar_offset(data)),
    ):
        wrong = [t for t in instants if offset(t) != t.astimezone(info).utcoffset()]
        assert not wrong, f"{reader}: {len(wrong)} instants off, first {wrong[:3]}"


def test_london_spring_change_is_at_one_utc_on_the_raw_bytes() -> None:
    """RFC 5545: an onset is the local time *before* the change. London's clocks go
    forward at 01:00 GMT, so DTSTART says 01:00 with TZOFFSETFROM +0000 (not 02:00)."""
    data = build_ics(make_event(*CASES[0]), domain="example.org", url="https://example.org/")
    daylight = data.split(b"BEGIN:DAYLIGHT\r\n")[1].split(b"END:DAYLIGHT")[0]
    assert daylight.startswith(b"DTSTART:20200329T010000\r\n")
    assert b"RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3\r\n" in daylight
    assert b"TZOFFSETFROM:+0000\r\nTZOFFSETTO:+0100\r\n" in daylight
    standard = data.split(b"BEGIN:STANDARD\r\n")[1].split(b"END:STANDARD")[0]
    assert standard.startswith(b"DTSTART:20201025T020000\r\n")  # 02:00 BST = 01:00 UTC
    assert b"RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10\r\n" in standard


@pytest.mark.parametrize(
    ("zone", "start", "shape"),
    [
        ("Europe/London", "2021-09-11T14:30", "rules"),
        ("Australia/Sydney", "2021-06-05T10:00", "rules"),
        ("America/New_York", "2007-05-01T19:00", "dates"),  # 2006 followed another rule
        ("America/Sao_Paulo", "2019-06-01T19:00", "dates"),
        ("Asia/Kolkata", "2021-03-01T18:00", "one"),
    ],
)
def test_compact_rules_where_one_rule_holds_explicit_dates_elsewhere(
    zone: str, start: str, shape: str
) -> None:
    """One STANDARD and one DAYLIGHT with RRULEs when the zone's rule held from the year
    before to the year after; dated observances without RRULE when it did not; a single
    observance for a zone that does not change. The compact form stays small."""
    data = build_ics(make_event(zone, start), domain="example.org", url="https://example.org/")
    [component] = icalendar.Calendar.from_ical(data).walk("VTIMEZONE")
    observances = component.subcomponents
    size = len(component.to_ical())
    if shape == "rules":
        assert sorted(str(o.name) for o in observances) == ["DAYLIGHT", "STANDARD"]
        assert all("RRULE" in o for o in observances)
        assert size < 600  # icalendar's add_missing_timezones wrote 2.7 KB for London
    elif shape == "dates":
        assert not any("RRULE" in o for o in observances)
        assert len(observances) >= 2
    else:
        [only] = observances
        assert only.name == "STANDARD"
        assert only.decoded("TZOFFSETFROM") == timedelta(hours=5, minutes=30)
        assert only.decoded("TZOFFSETTO") == timedelta(hours=5, minutes=30)


def test_an_event_over_new_year_covers_both_years() -> None:
    """An event that ends in the next year: the changes of both years are described."""
    event = make_event("Australia/Sydney", "2021-12-31T20:00").model_copy(
        update={"ends_at": datetime(2022, 1, 1, 2, 0, tzinfo=ZoneInfo("Australia/Sydney"))}
    )
    data = build_ics(event, domain="example.org", url="https://example.org/")
    offset = dateutil_offset(data, "Australia/Sydney")
    info = ZoneInfo("Australia/Sydney")
    for year in (2021, 2022):
        for change in zoneinfo_changes("Australia/Sydney", year):
            for instant in (change - timedelta(minutes=1), change):
                assert offset(instant) == instant.astimezone(info).utcoffset()
