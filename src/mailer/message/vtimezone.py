"""A VTIMEZONE for one event, written from zoneinfo's own transitions (RFC 5545 3.6.5).

icalendar's `add_missing_timezones()` writes each onset in the local time *after* the
change (Europe/London 2021: `20210328T020000` with TZOFFSETFROM +0000, i.e. 02:00 UTC,
an hour after the real change), so a client that honours the VTIMEZONE puts every
spring change an hour late. RFC 5545 wants the onset in the local time *before* the
change, the time TZOFFSETFROM describes; that is what `onset` below is.

Three shapes, each giving every transition zoneinfo has in the event's year(s)
(tests/test_vtimezone.py reads them back with dateutil and with icalendar):

- compact: one STANDARD and one DAYLIGHT, each with a yearly RRULE ("last Sunday of
  March at 01:00"), when the zone follows one such rule from the year before the event
  to the year after. About 350 bytes, 2 KB less than listing every change since 1970.
- a lone STANDARD for a zone without changes in those years (Asia/Kolkata).
- explicit, for the rest (a rule that changed, Ramadan breaks, a zone that moved its
  standard offset): the observance in force as the year opens, from the change that
  began it, then every change in the year(s), each its own STANDARD or DAYLIGHT with
  DTSTART (and RDATE for repeats of the same change).

Transitions are found by sampling zoneinfo every few hours and bisecting each change to
the second; no private zoneinfo attributes are read.
"""

from __future__ import annotations

import calendar
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import icalendar

# Zones change at most a few times a year and never twice within a few hours.
_STEP = timedelta(hours=6)
_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


@dataclass(frozen=True, slots=True)
class _State:
    offset: timedelta
    dst: timedelta  # negative in tzdata for Irish winter time and Moroccan Ramadan time
    name: str


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of a zone's offset (or abbreviation), as zoneinfo has it."""

    at: datetime  # the first UTC instant of the new state
    before: _State
    after: _State

    @property
    def onset(self) -> datetime:
        """The change in local time *before* it (RFC 5545's DTSTART of an observance)."""
        return _local(self.at, self.before)


def _state(zone: ZoneInfo, instant: datetime) -> _State:
    local = instant.astimezone(zone)
    offset, dst = local.utcoffset(), local.dst()
    assert offset is not None  # a ZoneInfo always knows both
    assert dst is not None
    return _State(offset, dst, local.tzname() or "")


def _daylight(state: _State, seen: set[_State]) -> bool:
    """DAYLIGHT or STANDARD, the way calendar apps expect: summer time is DAYLIGHT.

    tzdata marks Irish winter time and Moroccan Ramadan time as *negative* DST; clients
    (dateutil among them) misread a DAYLIGHT whose offset is below the STANDARD one,
    so those are STANDARD here and the state they alternate with is DAYLIGHT. Only the
    label depends on this; offsets are always zoneinfo's.
    """
    if state.dst:
        return state.dst > timedelta(0)
    return any(other.dst < timedelta(0) and other.offset < state.offset for other in seen)


def transitions(zone: ZoneInfo, start: datetime, end: datetime) -> list[Transition]:
    """Every change of `zone` in the UTC interval [start, end), in order."""
    found: list[Transition] = []
    here, state = start, _state(zone, start)
    while here < end:
        there = min(here + _STEP, end)
        next_state = _state(zone, there)
        if next_state != state:
            low, high = here, there  # state(low) == state, state(high) differs
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                middle = middle.replace(microsecond=0)
                if _state(zone, middle) == state:
                    low = middle
                else:
                    high = middle
            after = _state(zone, high)
            if high < end:
                found.append(Transition(high, state, after))
            state = after
            if after != next_state:  # a second change inside one step: look again from it
                here = high
                continue
        here = there
    return found


def vtimezone(zone_name: str, *, first_year: int, last_year: int) -> icalendar.Timezone:
    """The VTIMEZONE for events between 1 January `first_year` and 31 December
    `last_year` in `zone_name`, every transition in those years matching zoneinfo.

    A fresh component each call (callers may change it), parsed from bytes written
    once per zone and years: sampling zoneinfo costs ~40 ms, parsing ~1 ms, and
    `mailer serve` rebuilds an .ics on each request.
    """
    component = icalendar.Timezone.from_ical(_vtimezone_bytes(zone_name, first_year, last_year))
    assert isinstance(component, icalendar.Timezone)
    return component


@functools.lru_cache(maxsize=256)
def _vtimezone_bytes(zone_name: str, first_year: int, last_year: int) -> bytes:
    data: bytes = _write(zone_name, first_year, last_year).to_ical()
    return data


def _write(zone_name: str, first_year: int, last_year: int) -> icalendar.Timezone:
    zone = ZoneInfo(zone_name)
    component = icalendar.Timezone()
    component.add("tzid", zone_name)
    rules = _yearly_rules(zone, first_year, last_year)
    if rules is not None:
        for observance in rules:
            component.add_component(observance)
        return component
    start = datetime(first_year, 1, 1, tzinfo=UTC) - timedelta(days=1)
    end = datetime(last_year + 1, 1, 1, tzinfo=UTC) + timedelta(days=1)
    initial = _state(zone, start)
    changes = transitions(zone, start, end)
    seen = {initial} | {change.after for change in changes}
    # What is in force as the window opens, from the change that began it: a DAYLIGHT
    # whose TZOFFSETFROM equals its TZOFFSETTO reads as "no DST" to clients that take
    # the difference (dateutil does), and they then misplace the next change.
    previous = _last_change_before(zone, start)
    if previous is None:
        component.add_component(_observance(initial, initial, _local(start, initial), seen))
    else:
        seen.add(previous.before)
        component.add_component(_observance(previous.before, previous.after, previous.onset, seen))
    # One observance per distinct change; repeats of the same change become RDATEs.
    grouped: dict[tuple[_State, _State], icalendar.Component] = {}
    for change in changes:
        key = (change.before, change.after)
        if key in grouped:
            grouped[key].add("rdate", change.onset)
        else:
            grouped[key] = _observance(change.before, change.after, change.onset, seen)
            component.add_component(grouped[key])
    return component


def _last_change_before(zone: ZoneInfo, instant: datetime) -> Transition | None:
    """The last change before `instant`, looking back at most 20 years."""
    for days in (366, 366 * 20):  # mostly within the year; the longer look is rare
        found = transitions(zone, instant - timedelta(days=days), instant)
        if found:
            return found[-1]
    return None


# -- the compact form ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rule:
    """A yearly change: the first `weekday` on or after day `first_day` of `month`, at a
    local time, from one state to another. first_day None: the last such weekday."""

    month: int
    weekday: int
    first_day: int | None
    time: timedelta  # after local midnight, in the state before the change
    before: _State
    after: _State

    def day_in(self, year: int) -> int:
        length = calendar.monthrange(year, self.month)[1]
        first = length - 6 if self.first_day is None else self.first_day
        return first + (self.weekday - calendar.weekday(year, self.month, first)) % 7

    def onset_in(self, year: int) -> datetime:
        return datetime(year, self.month, self.day_in(year)) + self.time

    def rrule(self) -> dict[str, object]:
        weekday = _WEEKDAYS[self.weekday]
        if self.first_day is None:
            return {"freq": "yearly", "bymonth": self.month, "byday": f"-1{weekday}"}
        if self.first_day % 7 == 1:  # 1, 8, 15, 22: the 1st..4th weekday of the month
            return {
                "freq": "yearly",
                "bymonth": self.month,
                "byday": f"{self.first_day // 7 + 1}{weekday}",
            }
        days = list(range(self.first_day, self.first_day + 7))
        return {"freq": "yearly", "bymonth": self.month, "byday": weekday, "bymonthday": days}


def _yearly_rules(
    zone: ZoneInfo, first_year: int, last_year: int
) -> list[icalendar.Component] | None:
    """One STANDARD and one DAYLIGHT with RRULEs, or a lone STANDARD for a zone without
    changes, when that describes every change from the year before `first_year` to the
    year after `last_year`; None when it does not."""
    years = range(first_year - 1, last_year + 2)
    start, end = datetime(years[0], 1, 1, tzinfo=UTC), datetime(years[-1] + 1, 1, 1, tzinfo=UTC)
    changes = transitions(zone, start - timedelta(days=1), end + timedelta(days=1))
    if not changes:
        state = _state(zone, start)
        return [_observance(state, state, _local(start, state), {state})]
    by_year: dict[int, list[Transition]] = {}
    for change in changes:
        by_year.setdefault(change.onset.year, []).append(change)
    if sorted(by_year) != list(years) or any(len(by_year[y]) != 2 for y in years):
        return None
    seen = {change.after for change in changes}
    observances: list[icalendar.Component] = []
    for index in range(2):
        rule = _rule_for([by_year[y][index] for y in years])
        if rule is None:
            return None
        observance = _observance(rule.before, rule.after, rule.onset_in(years[0]), seen)
        observance.add("rrule", rule.rrule())
        observances.append(observance)
    if {o.name for o in observances} != {"STANDARD", "DAYLIGHT"}:
        return None
    return observances


def _rule_for(changes: list[Transition]) -> _Rule | None:
    """The weekday rule that yields exactly these changes (one a year), if there is one."""
    first = changes[0]
    onset = first.onset
    time = onset - onset.replace(hour=0, minute=0, second=0)
    for candidate in _candidates(onset):
        rule = _Rule(onset.month, onset.weekday(), candidate, time, first.before, first.after)
        if all(
            change.before == rule.before
            and change.after == rule.after
            and change.onset == rule.onset_in(change.onset.year)
            for change in changes
        ):
            return rule
    return None


def _candidates(onset: datetime) -> Iterator[int | None]:
    """Rules that could put a change on this day, the usual ones first: the 1st, 2nd or
    3rd weekday of the month, the last, the 4th, then "on or after day N"."""
    day = onset.day
    nth = (day - 1) // 7 * 7 + 1
    if nth <= 15:
        yield nth
    if day + 7 > calendar.monthrange(onset.year, onset.month)[1]:
        yield None
    if nth == 22:
        yield nth
    # Never past the 22nd, so the week fits in any month (even February).
    for first_day in range(max(1, day - 6), min(day, 22) + 1):
        if first_day % 7 != 1:
            yield first_day


def _local(instant: datetime, state: _State) -> datetime:
    return (instant + state.offset).replace(tzinfo=None)


def _observance(
    before: _State, after: _State, onset: datetime, seen: set[_State]
) -> icalendar.Component:
    """STANDARD or DAYLIGHT from `onset` (local time in `before`) on, in `after`."""
    daylight = _daylight(after, seen)
    observance = icalendar.TimezoneDaylight() if daylight else icalendar.TimezoneStandard()
    observance.add("dtstart", onset)
    observance.add("tzoffsetfrom", before.offset)
    observance.add("tzoffsetto", after.offset)
    if after.name:
        observance.add("tzname", after.name)
    return observance
