"""Event -> its calendar facts: an iCalendar invite and "add to calendar" links.

The invite is METHOD:PUBLISH (an announcement, RFC 5546): no ATTENDEE, so calendar apps
offer "add" rather than an RSVP that would go back to the organiser's mailbox. It is
the same for every recipient, so it is built once per campaign; its DESCRIPTION is the
event's summary (title, when, where, organiser, links), never a personal letter.

SEQUENCE (RFC 5545 3.8.7.4) tells a calendar that an invite with the same UID replaces
the entry it holds: it must grow whenever the time or the place changes. This module
stays pure, so the caller passes it in; `schedule_key` and `revision` compute it from
what earlier campaigns of the same event recorded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

import icalendar

from mailer.message.dates import format_span
from mailer.message.event import Event
from mailer.message.vtimezone import vtimezone

PRODID = "-//mailer//Event invitations//EN"
MEDIA_TYPE = 'text/calendar; charset="utf-8"; method=PUBLISH'
# The MIME part's type: `name` too, for clients that ignore Content-Disposition's filename.
CONTENT_TYPE = f'{MEDIA_TYPE}; name="invite.ics"'
_GOOGLE = "https://calendar.google.com/calendar/render"
_OUTLOOK = "https://outlook.live.com/calendar/0/deeplink/compose"


def event_uid(event: Event, *, domain: str) -> str:
    """Stable per event file: sending again (say, after a change of room) updates the entry.

    The slug alone could collide across organisers sharing a domain, so the organiser is
    hashed in; the time is deliberately left out so a rescheduled event keeps its UID.
    """
    digest = hashlib.sha256(f"{event.slug}\0{event.organiser.email}".encode()).hexdigest()[:12]
    return f"{event.slug}-{digest}@{domain}"


def event_summary(event: Event) -> str:
    """The DESCRIPTION: what a calendar entry needs, the same for everyone who gets it."""
    lines = [
        event.title,
        f"When: {format_span(event.starts_at, event.ends)}",
        f"Where: {event.place or 'online'}",
        f"Organiser: {event.organiser.name} <{event.organiser.email}>",
    ]
    if event.online_url:
        lines.append(f"Join online: {event.online_url}")
    if event.url:
        lines.append(f"Details: {event.url}")
    if event.map_url:
        lines.append(f"Map: {event.map_url}")
    return "\n".join(lines)


def build_ics(
    event: Event,
    *,
    domain: str,
    url: str,
    sequence: int = 0,
    stamp: datetime | None = None,
) -> bytes:
    """The .ics bytes (CRLF, folded at 75 octets by icalendar) for `event`.

    `sequence`: how many times the event's time or place has changed since the first
    invite with this UID went out (see `revision`).
    """
    if sequence < 0:
        raise ValueError(f"sequence must not be negative: {sequence}")
    cal = icalendar.Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    # Our own VTIMEZONE: icalendar's add_missing_timezones() puts spring changes an hour
    # late (see vtimezone.py). zoneinfo datetimes below get the matching TZID parameter.
    cal.add_component(
        vtimezone(event.timezone, first_year=event.starts_at.year, last_year=event.ends.year)
    )
    vevent = icalendar.Event()
    vevent.add("uid", event_uid(event, domain=domain))
    vevent.add("sequence", sequence)
    vevent.add("dtstamp", (stamp or datetime.now(UTC)).replace(microsecond=0))
    vevent.add("dtstart", event.starts_at)
    vevent.add("dtend", event.ends)
    vevent.add("summary", event.title)
    vevent.add("location", event.location)
    vevent.add("description", event_summary(event))
    vevent.add("url", url)
    vevent.add("status", "CONFIRMED")
    vevent.add("transp", "OPAQUE")
    organiser = icalendar.vCalAddress(f"mailto:{event.organiser.email}")
    organiser.params["cn"] = icalendar.vText(event.organiser.name)
    vevent.add("organizer", organiser)
    cal.add_component(vevent)
    data: bytes = cal.to_ical()
    return data


# -- SEQUENCE without a database in this module -------------------------------------------


def schedule_key(event: Event) -> str:
    """A short digest of what makes a changed invite significant: the start and end
    instants (UTC), the place and the join link. Store it with each campaign; compare
    with `revision`."""
    fmt = "%Y%m%dT%H%M%SZ"
    facts = "\0".join(
        (
            event.starts_at.astimezone(UTC).strftime(fmt),
            event.ends.astimezone(UTC).strftime(fmt),
            event.venue or "",
            event.address or "",
            event.online_url or "",
        )
    )
    return hashlib.sha256(facts.encode()).hexdigest()[:16]


def update_key(key: str, campaign_id: int) -> str:
    """The key an update campaign records (`mailer send --message update`): unlike any
    other, so its invite's SEQUENCE rises even when the file's time and place did not
    change (the organiser says it is an update), and the next campaign's rises again."""
    return f"{key}+u{campaign_id}"


def base_key(key: str) -> str:
    """The time-and-place part of a recorded key (an update's key without its mark)."""
    return key.partition("+")[0]


def revision(keys: Iterable[str]) -> int:
    """SEQUENCE for the last of `keys`: the schedule keys of every campaign of one event
    (one UID) in the order they were created, the one being built last. Each change from
    one campaign to the next raises it by one; a resend of the same facts keeps it.

    ["a", "a", "b", "a"] -> 2 (moved, then moved back: still two changes).
    """
    count, previous = 0, None
    for key in keys:
        if previous is not None and key != previous:
            count += 1
        previous = key
    return count


# -- "add to calendar" links --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CalendarLinks:
    """Where "Add to calendar" can point: Google, Outlook.com, and the campaign's .ics
    as served by `mailer serve` (None when there is no campaign to name: previews)."""

    google: str
    outlook: str
    ics: str | None = None


def _details(event: Event) -> str:
    # Short on purpose: the whole text rides in the URL.
    return f"Organised by {event.organiser.name}. {event.url or event.map_url or ''}".strip()


def calendar_links(event: Event, *, ics_url: str | None = None) -> CalendarLinks:
    details = _details(event)
    return CalendarLinks(
        google=google_calendar_url(event, details=details),
        outlook=outlook_calendar_url(event, details=details),
        ics=ics_url,
    )


def google_calendar_url(event: Event, *, details: str) -> str:
    """A Google Calendar "create event" link; times in UTC with the zone named for display."""
    fmt = "%Y%m%dT%H%M%SZ"
    start = event.starts_at.astimezone(UTC).strftime(fmt)
    end = event.ends.astimezone(UTC).strftime(fmt)
    query = {
        "action": "TEMPLATE",
        "text": event.title,
        "dates": f"{start}/{end}",
        "ctz": event.timezone,
        "location": event.location,
        "details": details,
    }
    return f"{_GOOGLE}?{urlencode(query)}"


def outlook_calendar_url(event: Event, *, details: str) -> str:
    """An Outlook.com "new event" deep link, times in UTC (the trailing Z), which Outlook
    shows in the reader's own zone. Spaces as %20: Outlook shows a '+' as it is."""
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    query = {
        "path": "/calendar/action/compose",
        "rru": "addevent",
        "startdt": event.starts_at.astimezone(UTC).strftime(fmt),
        "enddt": event.ends.astimezone(UTC).strftime(fmt),
        "subject": event.title,
        "location": event.location,
        "body": details,
    }
    return f"{_OUTLOOK}?{urlencode(query, quote_via=quote, safe='/:')}"
