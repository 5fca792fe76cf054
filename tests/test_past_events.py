"""Invitations that would come too late: an event that has started (the 2021 example in
2026), or a send scheduled after the event starts. validate warns; send and schedule say
so in their question (default No); --yes goes ahead and prints the warning. The clock is
injected in process; the CLI tests use dates far in the past or the future, so the wall
clock cannot change what they see."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from campaign_support import EVENT, answer_at_a_terminal, cli_environment
from cli_support import run_mailer_here
from mailer.audience.importer import import_file
from mailer.message.event import load_event
from mailer.message.lint import lint_event, timing_problem
from mailer.store import Store
from smtp_server import SmtpTestServer
from test_compose import TEMPLATES

STARTED = re.compile(
    r"starts_at: the event started \d+ years ago \(Saturday 11 September 2021, 2:30pm BST\)"
)
FUTURE = """---
title: Spring meeting
subject: "Invitation"
timezone: Europe/London
starts_at: 2099-03-18T19:00
venue: Calthorpe Arms
address: 252 Grays Inn Rd, London
organiser:
  name: CWO
  email: events@leftcom.example
---
Hello.
"""


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc(2021, 9, 1), None),
        (utc(2021, 9, 11, 13, 30, 20), "started just now"),
        (utc(2021, 9, 11, 13, 50), "started 20 minutes ago"),
        (utc(2021, 9, 11, 15, 45), "started 2 hours ago"),
        (utc(2021, 9, 12, 13, 0), "started 23 hours ago"),
        (utc(2021, 9, 24), "started 12 days ago"),
        (utc(2022, 1, 20), "started 4 months ago"),
        (utc(2026, 11, 30, 12), "started 5 years ago"),
    ],
)
def test_a_started_event_is_a_warning_on_the_starts_at_line(
    now: datetime, expected: str | None
) -> None:
    """The example starts 2021-09-11 14:30 BST (13:30 UTC): from then on validate warns,
    saying how long ago in the largest whole unit, at the starts_at line; no error."""
    report = lint_event(EVENT, templates_dir=TEMPLATES, now=now)
    assert report.errors == []
    if expected is None:
        assert report.warnings == []
        return
    (warning,) = report.warnings
    assert (warning.path, warning.line) == (EVENT, 5)
    assert warning.message == (
        f"starts_at: the event {expected} (Saturday 11 September 2021, 2:30pm BST)"
    )


def test_a_send_after_the_start_is_a_warning(tmp_path: Path) -> None:
    """Scheduled for 1 April, an event on 18 March is announced too late: warned, with
    how much too late; a send before the start is not."""
    path = tmp_path / "spring.md"
    path.write_text(FUTURE, encoding="utf-8")
    now = utc(2099, 3, 1)
    report = lint_event(path, templates_dir=TEMPLATES, now=now, send_at=utc(2099, 4, 1, 9))
    assert [(w.line, w.message) for w in report.warnings] == [
        (
            5,
            "starts_at: the event starts before the send time: it starts Wednesday "
            "18 March 2099, 7pm GMT, 13 days before the invitations go out",
        )
    ]
    event = load_event(path)
    assert timing_problem(event, now=now, send_at=utc(2099, 3, 18, 18, 59)) is None
    assert timing_problem(event, now=now) is None


@pytest.fixture
def members(tmp_path: Path, smtp_server_thread: SmtpTestServer) -> dict[str, str]:
    """A store with two members, and the environment of a `mailer` child process."""
    csv = tmp_path / "members.csv"
    csv.write_text("email,name\nann@example.org,Ann\nbo@example.org,Bo\n", encoding="utf-8")
    with Store.open(f"sqlite:///{tmp_path / 'mailer.db'}") as store:
        import_file(store, csv, list_name="members", rejects_path=tmp_path / "rejects.csv")
    return cli_environment(tmp_path, smtp_server_thread.port, MAILER_RATE_LIMIT="500")


def campaigns(env: dict[str, str]) -> int:
    with Store.open(env["MAILER_DATABASE_URL"]) as store:
        return len(store.campaigns())


def test_validate_and_preview_warn_about_the_2021_example(
    tmp_path: Path, members: dict[str, str]
) -> None:
    """They passed "without a word"; now they warn (and still succeed)."""
    for args in (("validate", str(EVENT)), ("preview", str(EVENT), "--list", "members")):
        result = run_mailer_here(members, tmp_path, *args)
        assert result.returncode == 0, result.stderr
        assert STARTED.search(result.stderr), result.stderr
        assert result.stderr.startswith(f"warning: {EVENT}:5: starts_at: ")


def test_send_asks_plainly_and_yes_still_sends(
    tmp_path: Path, members: dict[str, str], smtp_server_thread: SmtpTestServer
) -> None:
    """Unconfirmed, the refusal quotes the question, which opens with the fact; with
    --yes the warning is printed and the invitations go (scripts, the demo)."""
    refused = run_mailer_here(members, tmp_path, "send", str(EVENT), "--list", "members")
    assert refused.returncode == 1
    assert re.search(
        r"not confirmed: The event started \d+ years ago \(Saturday 11 September 2021, "
        r"2:30pm BST\)\. Send to 2 subscriber\(s\)\?",
        refused.stderr,
    ), refused.stderr
    assert campaigns(members) == 0
    sent = run_mailer_here(members, tmp_path, "send", str(EVENT), "--list", "members", "--yes")
    assert sent.returncode == 0, sent.stderr
    assert STARTED.search(sent.stderr), sent.stderr
    assert len(smtp_server_thread.messages) == 2


def test_at_a_terminal_the_question_says_it_and_enter_means_no(
    tmp_path: Path, members: dict[str, str], smtp_server_thread: SmtpTestServer
) -> None:
    """At a real terminal (a pty) the question says the event has started; Enter takes
    the default, No: nothing stored, nothing sent."""
    status, screen = answer_at_a_terminal(
        members, tmp_path, b"", "send", str(EVENT), "-l", "members"
    )
    assert status == 0
    screen = " ".join(screen.split())
    assert re.search(r"The event started \d+ years ago \(Saturday 11 September 2021", screen)
    assert "Send to 2 subscriber(s)? [y/N]" in screen
    assert "Nothing was changed." in screen
    assert smtp_server_thread.messages == []
    assert campaigns(members) == 0


def test_schedule_after_the_event_starts_says_so(tmp_path: Path, members: dict[str, str]) -> None:
    """A send on 1 April for an event on 18 March: the question says the event starts
    before the send time (refused without a terminal); --yes schedules it, warning."""
    event = tmp_path / "spring.md"
    event.write_text(FUTURE, encoding="utf-8")
    args = ("schedule", str(event), "--list", "members", "--at", "2099-04-01 10:00")
    refused = run_mailer_here(members, tmp_path, *args, "--tz", "Europe/London")
    assert refused.returncode == 1
    assert (
        "not confirmed: The event starts before the send time: it starts Wednesday "
        "18 March 2099, 7pm GMT, 13 days before the invitations go out. Schedule it for "
        "Wednesday 1 April 2099, 10:00 BST"
    ) in " ".join(refused.stderr.split())
    assert campaigns(members) == 0
    done = run_mailer_here(members, tmp_path, *args, "--tz", "Europe/London", "--yes")
    assert done.returncode == 0, done.stderr
    assert f"warning: {event}:5: starts_at: the event starts before the send time" in (done.stderr)
    assert "scheduled for Wednesday 1 April 2099" in done.stdout
    assert campaigns(members) == 1
    early = tmp_path / "early.md"
    early.write_text(FUTURE, encoding="utf-8")
    args = ("schedule", str(early), "--list", "members", "--at", "2099-03-01 10:00")
    before = run_mailer_here(members, tmp_path, *args, "--tz", "Europe/London", "--yes")
    assert before.returncode == 0, before.stderr
    assert "warning" not in before.stderr
