"""How invitations write dates and times: 'Saturday 11 September 2021, 2:30pm BST'."""

from __future__ import annotations

from calendar import day_name, month_name
from datetime import datetime


def clock(moment: datetime) -> str:
    """'2:30pm', '2pm', '12pm' (noon): how invitations usually write times."""
    hour = moment.hour % 12 or 12
    suffix = "am" if moment.hour < 12 else "pm"
    return f"{hour}{suffix}" if moment.minute == 0 else f"{hour}:{moment.minute:02d}{suffix}"


def day(moment: datetime) -> str:
    """'Saturday 11 September 2021' (the C locale's names: Python never calls setlocale)."""
    return f"{day_name[moment.weekday()]} {moment.day} {month_name[moment.month]} {moment.year}"


def format_when(moment: datetime) -> str:
    """'Saturday 11 September 2021, 2:30pm BST' in the moment's own zone."""
    return f"{day(moment)}, {clock(moment)} {moment.tzname()}"


def format_span(start: datetime, end: datetime) -> str:
    """'Saturday 11 September 2021, 2:30pm to 4:30pm BST'; the end's day and zone are
    written out only when they differ from the start's."""
    if start.date() != end.date():
        return f"{format_when(start)} to {format_when(end)}"
    if start.tzname() != end.tzname():  # a clock change in between
        return f"{format_when(start)} to {clock(end)} {end.tzname()}"
    return f"{day(start)}, {clock(start)} to {clock(end)} {end.tzname()}"
