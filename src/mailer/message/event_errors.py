"""Plain words for what is wrong in an event's front matter, in place of YAML's and pydantic's.

Organisers fix event files by hand and are not programmers: "Input should be a valid
dictionary or instance of Organiser" or "mapping values are not allowed here, in
'<unicode string>', line 5, column 12" (a line of the front matter, not of the file) told
a new organiser nothing they could act on. Each message here says what was written, what
is wrong with it and how to write it instead; the caller adds the file, the key and the
file's line.
"""

from __future__ import annotations

import re
from calendar import month_name
from datetime import datetime
from typing import Any

import yaml

ORGANISER_SHAPE = "organiser: {name: CWO, email: events@example.org} (or CWO <events@example.org>)"
_DATE_SHAPE = "year-month-day hour:minute, e.g. 2021-09-11 14:30"
# Day, month and year in some order other than ISO 8601's, with an optional time.
_NUMERIC_DATE = re.compile(
    r"(?P<a>\d{1,2})[/.-](?P<b>\d{1,2})[/.-](?P<year>\d{4})"
    r"(?:[ T,]+(?P<hour>\d{1,2})[:.](?P<minute>\d{2})\s*(?P<half>[ap]\.?m\.?)?)?",
    re.IGNORECASE,
)
# `"CWO" <events@example.org>`: YAML ends the value at the closing quote.
_QUOTED_THEN_MORE = re.compile(r"""(["'])[^"']*\1\s*[^\s#]""")
# What a required key looks like written, for "required, e.g. ...".
_EXAMPLES = {
    "title": "title: CWO London Public Meeting",
    "subject": 'subject: "Invitation: Public Meeting, 11 September"',
    "timezone": "timezone: Europe/London",
    "starts_at": "starts_at: 2021-09-11 14:30",
    "organiser": ORGANISER_SHAPE,
    "name": "name: CWO",
    "email": "email: events@example.org",
}
QUOTE_HINT = (
    "Put a value in quotes when it holds ': ' or ' #', or starts with { [ * & ! | > @ ` "
    "or a quote mark."
)


def shown(value: object) -> str:
    """A value as the organiser wrote it, quoted: '14/03/2027 18:30'."""
    if value is None:
        return "nothing"
    text = str(value)
    if isinstance(value, bool):  # YAML turned yes/no/true/false into a boolean
        text = text.lower()
    return repr(text if len(text) <= 80 else text[:77] + "...")


def date_advice(value: object, reason: str = "") -> str:
    """Why `value` is not a date and time, and how to write it: '14/03/2027 18:30' is
    not a date and time; write it as 2027-03-14 18:30 (year-month-day)."""
    text = str(value).strip()
    found = _NUMERIC_DATE.fullmatch(text)
    if found is None:
        because = f" ({reason})" if reason and re.match(r"\d{4}-", text) else ""
        return f"{shown(value)} is not a date and time{because}; write it as {_DATE_SHAPE}"
    time = _clock(found)
    # Day first (14/03) or month first (03/14) is unambiguous only when one part is
    # over 12; 03/04 is 3 April in London and 4 March in New York, so both are offered.
    readings = []
    for day, month in ((found["a"], found["b"]), (found["b"], found["a"])):
        try:
            date = datetime(int(found["year"]), int(month), int(day))
        except ValueError:
            continue
        readings.append(date)
    readings = sorted(set(readings))
    if not readings:
        return f"{shown(value)} is not a date and time; write it as {_DATE_SHAPE}"
    if len(readings) == 1:
        return (
            f"{shown(value)} is not a date and time; write it as "
            f"{readings[0]:%Y-%m-%d} {time} (year-month-day, then the time)"
        )
    choices = " or ".join(
        f"{d:%Y-%m-%d} {time} for {d.day} {month_name[d.month]}" for d in readings
    )
    return (
        f"{shown(value)} is not a date and time, and could mean two days; write it "
        f"year-month-day: {choices}"
    )


def _clock(found: re.Match[str]) -> str:
    if found["hour"] is None:
        return "HH:MM"
    hour = int(found["hour"])
    half = (found["half"] or "").lower()
    if half.startswith("p") and hour < 12:
        hour += 12
    elif half.startswith("a") and hour == 12:
        hour = 0
    return f"{hour:02d}:{found['minute']}"


def plain_message(problem: Any) -> str:
    """One pydantic error (an ErrorDetails) in plain words, without the key."""
    kind: str = problem["type"]
    value = problem.get("input")
    ctx: dict[str, Any] = problem.get("ctx") or {}
    key = str(problem["loc"][-1]) if problem["loc"] else ""
    if kind == "missing":
        example = _EXAMPLES.get(key)
        return f"required; write it like {example}" if example else "required"
    if kind.startswith(("datetime", "date_")):
        return date_advice(value, str(ctx.get("error", "")))
    if value is None and kind.endswith("_type"):
        return "has no value; write one after the colon"
    if kind == "string_type" and isinstance(value, list | dict):
        return (
            f"YAML read {shown(value)} as a list or a set of keys (the value starts with "
            "'[' or '{'); put the whole value in quotes"
        )
    if kind == "string_type":
        return f"{shown(value)} is not text; write plain text after the colon"
    if kind == "string_too_long":
        return (
            f"is {len(str(value))} characters long; it may have at most "
            f"{ctx.get('max_length')}: make it shorter"
        )
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{shown(value)} is not a whole number; write digits only, e.g. {key}: 2"
    if kind in ("greater_than_equal", "greater_than"):
        return f"{shown(value)} is too small: it must be at least {_bound(ctx)}"
    if kind in ("less_than_equal", "less_than"):
        return f"{shown(value)} is too large: it may be at most {_bound(ctx)}"
    if kind in ("bool_parsing", "bool_type"):
        return f"{shown(value)} is not true or false; write {key}: true or {key}: false"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"{shown(value)} is not a set of keys; write it as {key}: {{name: ..., ...}}"
    message = str(problem["msg"])
    return message.removeprefix("Value error, ")


def _bound(ctx: dict[str, Any]) -> str:
    for name, offset in (("ge", 0), ("le", 0), ("gt", 1), ("lt", -1)):
        if name in ctx:
            return str(ctx[name] + offset)
    return "?"


def yaml_message(exc: yaml.YAMLError, front: str) -> tuple[str, int]:
    """What is wrong with front matter YAML refused, and the front matter's 0-based line
    it is on. YAML's own words number the lines of the front matter alone and quote
    parser states; these name the key and say how to write the value."""
    mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    problem = str(getattr(exc, "problem", None) or exc)
    lines = front.splitlines()
    index = mark.line if mark is not None else 0
    text = lines[index] if index < len(lines) else ""
    key, colon, value = text.partition(":")
    key, value = key.strip(), value.strip()
    if problem.startswith("mapping values are not allowed") and colon and value:
        return (
            f"{key}: the value {value!r} has ': ' in it, which YAML reads as the start "
            f"of another key; put the whole value in quotes: {key}: {_quoted(value)}",
            index,
        )
    if "'\\t'" in problem or "\t" in text[: len(text) - len(text.lstrip())]:
        return "a tab indents this line; YAML indents with spaces only", index
    # A value starting with `{` or `[` is a YAML mapping or list: `subject: {{
    # subscriber.name }}, ...` fails on its own line or after it, the line the mapping
    # opened on being the context's.
    start = context_mark.line if context_mark is not None else index
    for candidate in dict.fromkeys((index, start)):
        written = lines[candidate] if candidate < len(lines) else ""
        name, _, written_value = (part.strip() for part in written.partition(":"))
        flow = written_value[:1] in ("{", "[") and name != "organiser"
        if _QUOTED_THEN_MORE.match(written_value) and candidate == index:
            return (
                f"{name}: the value starts with a quote mark and goes on after the closing "
                f"one; put the whole value in quotes: {name}: {_quoted(written_value)}",
                candidate,
            )
        if flow or written_value.startswith("{{"):
            return (
                f"{name}: a value starting with {written_value[0]!r} is read by YAML as a "
                "list or a set of keys; put the whole value in quotes: "
                f"{name}: {_quoted(written_value)}",
                candidate,
            )
    context = getattr(exc, "context", None)
    where = f" ({context} on line {start + 2})" if context and start != index else ""
    near = f" near {text.strip()!r}" if text.strip() else ""
    return f"front matter is not valid YAML{near}: {problem}{where}", index


def _quoted(value: str) -> str:
    if '"' not in value:
        return f'"{value}"'
    return "'" + value.replace("'", "''") + "'"
