"""Organiser-written send times: exact UTC instants, DST traps refused with clear errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailer.campaigns.when import describe_time, parse_send_time
from mailer.errors import InputError

BEFORE_2021 = datetime(2021, 1, 1, tzinfo=UTC)


def test_london_summer_time_is_one_hour_ahead_of_utc() -> None:
    when = parse_send_time("2021-09-04 10:00", "Europe/London", now=BEFORE_2021)
    assert when == datetime(2021, 9, 4, 9, 0, tzinfo=UTC)
    assert describe_time(when, "Europe/London") == (
        "Saturday 4 September 2021, 10:00 BST (2021-09-04 09:00 UTC)"
    )


def test_winter_time_equals_utc_and_explicit_offsets_are_honoured() -> None:
    assert parse_send_time("2021-12-04 10:00", "Europe/London", now=BEFORE_2021) == datetime(
        2021, 12, 4, 10, 0, tzinfo=UTC
    )
    assert parse_send_time("2021-10-31 01:30+01:00", "Europe/London", now=BEFORE_2021) == datetime(
        2021, 10, 31, 0, 30, tzinfo=UTC
    )


def test_a_time_that_happens_twice_is_refused() -> None:
    """01:30 on 31 October 2021 in London happened at 00:30 and at 01:30 UTC."""
    with pytest.raises(InputError, match="happens twice") as info:
        parse_send_time("2021-10-31 01:30", "Europe/London", now=BEFORE_2021)
    assert "00:30 or 01:30 UTC" in str(info.value)


def test_a_time_that_never_happens_is_refused() -> None:
    """01:30 on 28 March 2021 in London was skipped (clocks went from 01:00 to 02:00)."""
    with pytest.raises(InputError, match="does not exist"):
        parse_send_time("2021-03-28 01:30", "Europe/London", now=BEFORE_2021)


@pytest.mark.parametrize(
    ("text", "zone", "message"),
    [
        ("2020-06-01 10:00", "Europe/London", "is in the past"),
        ("next tuesday", "Europe/London", "is not a date and time"),
        ("2021-09-04 10:00", "Mars/Olympus", "unknown time zone"),
    ],
)
def test_bad_times_name_the_option(text: str, zone: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_send_time(text, zone, now=BEFORE_2021)
