"""Event files: front matter validation with file and line, template checks, and the CLI."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from mailer.cli import main
from mailer.errors import EventFileError, TemplateError
from mailer.message.event import front_matter_keys, load_event
from mailer.message.lint import validate_event
from test_compose import EXAMPLE, TEMPLATES

FRONT = """---
title: Meeting
subject: "Invitation"
timezone: Europe/London
starts_at: {start}
venue: Calthorpe Arms
address: 252 Grays Inn Rd, London
organiser:
  name: CWO
  email: events@leftcom.example
---
"""


def write(tmp_path: Path, text: str, name: str = "meeting.md") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_example_event_loads_with_a_dst_correct_start() -> None:
    """The example is 14:30 London time in summer, i.e. BST (+01:00), and ends at 16:30."""
    event = load_event(EXAMPLE)
    assert event.slug == "london-public-meeting"
    assert event.path == EXAMPLE
    assert event.starts_at.utcoffset() == timedelta(hours=1)
    assert event.starts_at.tzname() == "BST"
    assert event.ends - event.starts_at == timedelta(hours=2)
    assert "Dear {{ subscriber.first_name" in event.description
    assert validate_event(EXAMPLE, templates_dir=TEMPLATES) == []


def test_an_offset_that_is_the_zones_own_is_taken(tmp_path: Path) -> None:
    """An ISO time with the offset London has at that moment means what it says, and is
    checked like any other (an end before the start is refused)."""
    event = load_event(write(tmp_path, FRONT.format(start="2027-07-10T14:30+01:00") + "Hi\n"))
    assert (event.starts_at.hour, event.starts_at.tzname()) == (14, "BST")
    text = FRONT.format(start="2027-07-10T14:30+01:00").replace(
        "timezone: Europe/London", "timezone: Europe/London\nends_at: 2027-07-10T13:00+01:00"
    )
    with pytest.raises(EventFileError, match="must be after starts_at"):
        load_event(write(tmp_path, text + "Hi\n"))


def test_winter_event_is_gmt_and_ends_two_hours_later_by_default(tmp_path: Path) -> None:
    """Without ends_at the event lasts two hours; in January London is on GMT."""
    event = load_event(write(tmp_path, FRONT.format(start="2022-01-15T19:00") + "Hi\n"))
    assert event.starts_at.tzname() == "GMT"
    assert event.ends_at is None
    assert event.ends.hour == 21


@pytest.mark.parametrize(
    ("start", "line", "words"),
    [
        ("2021-03-28T01:30", 5, "does not exist"),  # skipped by the spring clock change
        ("2021-13-01T10:00", 5, "starts_at"),
        ("next tuesday", 5, "starts_at"),
        # London is on GMT in mid-March: this offset would move the meeting an hour
        ("2027-03-13T14:30+01:00", 5, "has the offset +0100, but Europe/London is at +0000"),
    ],
)
def test_bad_dates_are_reported_on_their_line(
    tmp_path: Path, start: str, line: int, words: str
) -> None:
    """A date that cannot be read, or does not exist in the zone, names the starts_at line."""
    path = write(tmp_path, FRONT.format(start=start) + "Hi\n")
    with pytest.raises(EventFileError) as caught:
        load_event(path)
    assert (caught.value.path, caught.value.line) == (path, line)
    assert words in str(caught.value)


def test_every_front_matter_problem_is_listed(tmp_path: Path) -> None:
    """Missing, unknown and invalid fields are all reported, each with its line."""
    text = FRONT.format(start="2021-09-11T14:30").replace("venue: Calthorpe Arms\n", "")
    text = text.replace("  email: events@leftcom.example", "  email: not-an-address")
    text = text.replace("timezone: Europe/London", "timezone: Europe/London\ncolour: red")
    problems = validate_event(write(tmp_path, text + "Hi\n"), templates_dir=TEMPLATES)
    found = {(str(p).split(": ", 2)[1], p.line) for p in problems}
    assert ("colour", 5) in found
    assert ("venue", 1) in found
    assert ("organiser.email", 10) in found
    assert all(isinstance(p, EventFileError) for p in problems)


@pytest.mark.parametrize(
    ("key", "line", "expected"),
    [
        (
            "adress: 1 Road",
            5,
            "adress: unknown key; did you mean 'address'? (the front matter "
            "takes: title, subject, timezone, starts_at, ends_at, online_url, venue, address, "
            "map_url, url, ",
        ),
        ("colour: red", 5, "colour: unknown key (the front matter takes: title, subject, "),
        ("  phone: 0123", 11, "organiser.phone: unknown key (organiser takes: name, email)"),
    ],
)
def test_unknown_keys_name_the_keys_allowed(
    tmp_path: Path, key: str, line: int, expected: str
) -> None:
    """Not pydantic's "Extra inputs are not permitted": the allowed keys, and the likely
    typo, on the unknown key's own line."""
    text = FRONT.format(start="2021-09-11T14:30")
    if key.startswith(" "):
        text = text.replace(
            "  email: events@leftcom.example\n", f"  email: e@leftcom.example\n{key}\n"
        )
    else:
        text = text.replace("timezone: Europe/London\n", f"timezone: Europe/London\n{key}\n")
    path = write(tmp_path, text + "Hi\n")
    problems = validate_event(path, templates_dir=TEMPLATES)
    assert len(problems) == 1, problems
    assert str(problems[0]).startswith(f"{path}:{line}: {expected}")
    assert "Extra inputs" not in str(problems[0])
    if not key.startswith(" "):
        assert str(problems[0]).endswith(f"takes: {', '.join(front_matter_keys())})")
        assert "organiser, layout" in str(problems[0])


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("no front matter\n", 1),
        ("---\ntitle: x\n", 1),
        # The line of the value to quote, not the next one where YAML gave up.
        ("---\ntitle: [unclosed\nvenue: x\n---\n", 2),
        ("---\n- a list\n---\n", 2),
    ],
)
def test_malformed_files_are_reported(tmp_path: Path, text: str, line: int) -> None:
    """Missing fences, broken YAML and non-mapping front matter each get a line."""
    with pytest.raises(EventFileError) as caught:
        load_event(write(tmp_path, text))
    assert caught.value.line == line


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        ("Hello\n\n{{ subscribr.name }}\n", 14, "'subscribr' is undefined"),
        ("Hello {{ subscriber.nmae }}\n", 12, "subscriber.nmae"),
        ("Hi\n{% if subscriber.name %}\nno end\n", 13, "syntax"),
        ("{{ subscriber.name | safe }}\n", 12, "safe"),
        ("{{ range(3) }}\n", 12, "'range' is undefined"),
    ],
)
def test_template_problems_are_reported_with_the_event_file_line(
    tmp_path: Path, body: str, line: int, words: str
) -> None:
    """Undefined names, unknown fields, syntax errors: the line is the event file's line."""
    path = write(tmp_path, FRONT.format(start="2021-09-11T14:30") + body)
    problems = validate_event(path, templates_dir=TEMPLATES)
    assert problems, body
    assert isinstance(problems[0], TemplateError)
    assert (problems[0].path, problems[0].line) == (path, line)
    assert words in str(problems[0])


def test_missing_layout_is_reported(tmp_path: Path) -> None:
    """An event naming a layout that does not exist points at its `layout:` line and
    names the layouts there are."""
    text = FRONT.format(start="2021-09-11T14:30").replace("---\nH", "H")
    text = text.replace("venue:", "layout: fancy\nvenue:")
    path = write(tmp_path, text + "Hi\n")
    problems = validate_event(path, templates_dir=TEMPLATES)
    assert len(problems) == 1
    line = next(
        n for n, t in enumerate(path.read_text().splitlines(), 1) if t.startswith("layout:")
    )
    assert (problems[0].path, problems[0].line) == (path, line)
    assert "'fancy' not found (layouts: default)" in str(problems[0])


def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with the templates and the example subscribers."""
    shutil.copytree(TEMPLATES, tmp_path / "templates")
    shutil.copy(TEMPLATES.parent / "subscribers.example.csv", tmp_path)
    monkeypatch.chdir(tmp_path)
    for name in ("MAILER_TEMPLATES_DIR", "MAILER_VAR_DIR", "MAILER_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "templates" / "events" / "london-public-meeting.md"


def run(argv: list[str]) -> int:
    """The CLI's exit status (main exits even on success in Click's standalone mode)."""
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_cli_validate_exits_2_on_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mailer validate` prints each problem as file:line and exits with status 2."""
    event = project(tmp_path, monkeypatch)
    assert run(["validate", str(event)]) == 0
    assert "OK" in capsys.readouterr().out
    text = event.read_text(encoding="utf-8")
    event.write_text(text + "{{ nope }}\n", encoding="utf-8")
    line = len(text.splitlines()) + 1
    assert run(["validate", str(event)]) == 2
    assert f"{event}:{line}: 'nope' is undefined" in capsys.readouterr().err.replace("\n", "")


def test_cli_preview_writes_the_four_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mailer preview` writes .html/.txt/.ics/.eml for the first subscriber and prints paths."""
    event = project(tmp_path, monkeypatch)
    assert run(["preview", str(event), "--out", "out"]) == 0
    printed = capsys.readouterr().out
    for suffix in (".html", ".txt", ".ics", ".eml"):
        path = Path("out") / f"london-public-meeting{suffix}"
        assert str(path) in printed
        assert path.stat().st_size > 200
    assert "Dear Zoë" in (tmp_path / "out" / "london-public-meeting.txt").read_text("utf-8")
    assert run(["preview", str(event), "--subscriber", "nobody@example.org"]) == 2


@pytest.mark.parametrize(
    ("old", "new", "line", "expected"),
    [
        (
            "starts_at: 2027-07-10T14:30",
            "starts_at: 03/04/2027 7.30pm",
            5,
            "starts_at: '03/04/2027 7.30pm' is not a date and time, and could mean two days; "
            "write it year-month-day: 2027-03-04 19:30 for 4 March or 2027-04-03 19:30 for "
            "3 April",
        ),
        (
            "starts_at: 2027-07-10T14:30",
            "starts_at: next Tuesday",
            5,
            "starts_at: 'next Tuesday' is not a date and time; write it as year-month-day "
            "hour:minute, e.g. 2021-09-11 14:30",
        ),
        ("title: Meeting", "title:", 2, "title: has no value; write one after the colon"),
        (
            "venue: Calthorpe Arms",
            "venue: Calthorpe Arms\ncapacity: forty",
            7,
            "capacity: 'forty' is not a whole number; write digits only, e.g. capacity: 2",
        ),
        (
            "venue: Calthorpe Arms",
            "venue: Calthorpe Arms\nrsvp: perhaps",
            7,
            "rsvp: 'perhaps' is not true or false; write rsvp: true or rsvp: false",
        ),
        (
            "title: Meeting",
            "title: " + "x" * 201,
            2,
            "title: is 201 characters long; it may have at most 200: make it shorter",
        ),
        (
            'subject: "Invitation"',
            "subject: {{ subscriber.first_name }}, come along",
            3,
            "subject: a value starting with '{' is read by YAML as a list or a set of keys; "
            'put the whole value in quotes: subject: "{{ subscriber.first_name }}, come along"',
        ),
        (
            "organiser:\n  name: CWO\n  email: events@leftcom.example",
            'organiser: "CWO" <events@leftcom.example>',
            8,
            "organiser: the value starts with a quote mark and goes on after the closing one; "
            """put the whole value in quotes: organiser: '"CWO" <events@leftcom.example>'""",
        ),
        (
            "  email: events@leftcom.example",
            "  email: events at leftcom",
            10,
            "organiser.email: 'events at leftcom' is not an email address: ",
        ),
    ],
)
def test_front_matter_mistakes_are_told_in_plain_words(
    tmp_path: Path, old: str, new: str, line: int, expected: str
) -> None:
    """Each mistake a new organiser made, in words that say what was written and how to
    write it instead, on its line; none of pydantic's or YAML's own."""
    text = FRONT.format(start="2027-07-10T14:30")
    assert text.count(old) == 1
    path = write(tmp_path, text.replace(old, new) + "Hi\n")
    problems = validate_event(path, templates_dir=TEMPLATES)
    assert [str(p)[: len(f"{path}:{line}: {expected}")] for p in problems] == [
        f"{path}:{line}: {expected}"
    ]
    for jargon in ("Input should", "valid dictionary", "<unicode string>", "Value error"):
        assert jargon not in str(problems[0])


@pytest.mark.parametrize(
    ("written", "name"),
    [
        ("CWO <events@leftcom.example>", "CWO"),
        ("Workers' Organisation < events@leftcom.example >", "Workers' Organisation"),
        ("""'"CWO" <events@leftcom.example>'""", "CWO"),
    ],
)
def test_an_organiser_as_name_and_address_is_the_mapping(
    tmp_path: Path, written: str, name: str
) -> None:
    """`Name <address>` has one reading: the same organiser as the mapping."""
    text = FRONT.format(start="2027-07-10T14:30").replace(
        "organiser:\n  name: CWO\n  email: events@leftcom.example", f"organiser: {written}"
    )
    event = load_event(write(tmp_path, text + "Hi\n"))
    assert (event.organiser.name, event.organiser.email) == (name, "events@leftcom.example")
