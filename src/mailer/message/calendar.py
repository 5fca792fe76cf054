"""Event -> its calendar facts: human-readable times, an iCalendar invite, a Google Calendar link.

The invite is METHOD:PUBLISH (an announcement, RFC 5546): no ATTENDEE, so calendar apps
offer "add" rather than an RSVP that would go back to the organiser's mailbox. It is
the same for every recipient, so it is built once per campaign.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from urllib.parse import urlencode

import icalendar

from mailer.message.event import Event

PRODID = "-//mailer//Event invitations//EN"
CONTENT_TYPE = 'text/calendar; charset="utf-8"; method=PUBLISH'
_GOOGLE = "https://calendar.google.com/calendar/render"


def event_uid(event: Event, *, domain: str) -> str:
    """Stable per event file: sending again (say, after a change of room) updates the entry.

    The slug alone could collide across organisers sharing a domain, so the organiser is
    hashed in; the time is deliberately left out so a rescheduled event keeps its UID.
    """
    digest = hashlib.sha256(f"{event.slug}\0{event.organiser.email}".encode()).hexdigest()[:12]
    return f"{event.slug}-{digest}@{domain}"


def build_ics(
    event: Event, *, domain: str, description: str, url: str, stamp: datetime | None = None
) -> bytes:
    """The .ics bytes (CRLF, folded at 75 octets by icalendar) for `event`."""
    cal = icalendar.Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    vevent = icalendar.Event()
    vevent.add("uid", event_uid(event, domain=domain))
    vevent.add("dtstamp", (stamp or datetime.now(UTC)).replace(microsecond=0))
    # zoneinfo datetimes get TZID parameters; add_missing_timezones writes the VTIMEZONE.
    vevent.add("dtstart", event.starts_at)
    vevent.add("dtend", event.ends)
    vevent.add("summary", event.title)
    vevent.add("location", event.location)
    vevent.add("description", description)
    vevent.add("url", url)
    vevent.add("status", "CONFIRMED")
    vevent.add("transp", "OPAQUE")
    organiser = icalendar.vCalAddress(f"mailto:{event.organiser.email}")
    organiser.params["cn"] = icalendar.vText(event.organiser.name)
    vevent.add("organizer", organiser)
    cal.add_component(vevent)
    cal.add_missing_timezones()
    data: bytes = cal.to_ical()
    return data


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
