"""Organiser-written send times ("2021-09-04 10:00", Europe/London) -> an exact UTC instant.

A wall-clock time that happens twice (the autumn DST change) or never (spring) is refused
with a clear message instead of guessed: an invitation an hour early or late is wrong.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailer.errors import InputError


def parse_send_time(text: str, timezone: str, *, now: datetime | None = None) -> datetime:
    """The UTC instant for local `text` in `timezone`; must be in the future."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InputError(
            f"--tz: unknown time zone {timezone!r}", hint="e.g. Europe/London"
        ) from exc
    try:
        naive = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise InputError(
            f"--at: {text!r} is not a date and time", hint='Write it as "2021-09-04 10:00".'
        ) from exc
    if naive.tzinfo is not None:
        local = naive.astimezone(zone)
    else:
        early, late = naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1)
        # A skipped time does not survive the round trip through UTC (01:30 comes back as
        # 02:30); check that first, since fold=0/1 also differ inside a gap.
        if early.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive:
            raise InputError(
                f"--at: {naive:%Y-%m-%d %H:%M} does not exist in {timezone} (clocks go forward)",
                hint="Pick a time outside the skipped hour.",
            )
        if early.utcoffset() != late.utcoffset():
            raise InputError(
                f"--at: {naive:%Y-%m-%d %H:%M} happens twice in {timezone} (clocks go back); "
                f"it is either {early.astimezone(UTC):%H:%M} or {late.astimezone(UTC):%H:%M} UTC",
                hint="Pick a time outside the repeated hour, or give an offset (+01:00).",
            )
        local = early
    instant = local.astimezone(UTC)
    if instant <= (now or datetime.now(UTC)):
        raise InputError(
            f"--at: {local:%Y-%m-%d %H:%M %Z} is in the past",
            hint="Give a future time (in the organiser's zone, --tz).",
        )
    return instant


def describe_time(instant: datetime, timezone: str) -> str:
    """'Saturday 4 September 2021, 10:00 BST (09:00 UTC)'."""
    local = instant.astimezone(ZoneInfo(timezone))
    return (
        f"{local:%A} {local.day} {local:%B %Y, %H:%M} {local.tzname()} "
        f"({instant.astimezone(UTC):%Y-%m-%d %H:%M} UTC)"
    )
