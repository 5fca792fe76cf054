"""One set of checks for an event file: `mailer validate`, `preview`, `send --dry-run` and
`send` report a broken file with the same file, line and words, and nothing is written,
stored or sent. Run as the organiser runs them, a real store, a real SMTP server: the good
file and one broken file in child processes, every other broken file through the same
`mailer.cli.main` inside the test process (tests/cli_support.py: a child process costs
seconds, 64 of them did minutes, and the checks are the command's words and status)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from campaign_support import cli_environment, make_settings, run_mailer, seed_list, send
from cli_support import run_mailer_here
from mailer.audience.importer import import_file
from mailer.campaigns.lifecycle import start_or_resume
from mailer.errors import TemplateError
from mailer.message.event import load_event
from mailer.message.templating import blank_tags_on
from mailer.models import CampaignStatus
from mailer.store import Store
from smtp_server import SmtpTestServer

# Line numbers below are the lines of this file as written (before any edit).
GOOD = """---
title: Meeting
subject: "Invitation for {{ subscriber.first_name }}"
timezone: Europe/London
starts_at: 2099-09-11T14:30
venue: Calthorpe Arms
address: 252 Grays Inn Rd, London
organiser:
  name: CWO
  email: events@leftcom.example
---
Dear {{ subscriber.first_name }},

See you in {{ subscriber.attributes.city }}.
"""
LAST = GOOD.count("\n")
MEMBERS = "email,name,city\nann.lee@example.org,Ann Lee,London\nbo.kim@example.org,Bo Kim,Leeds\n"


def replace(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert text.count(old) == 1, old
        return text.replace(old, new)

    return edit


def append(extra: str) -> Callable[[str], str]:
    return lambda text: text + extra


# (id, edit of GOOD, line of the first error, words in it)
BROKEN = [
    ("unknown key", replace("timezone:", "colour: red\ntimezone:"), 4, "colour: unknown key"),
    ("bad date", replace("2099-09-11T14:30", "2030-13-01T10:00"), 5, "starts_at"),
    ("unknown zone", replace("Europe/London", "Europe/Londn"), 4, "unknown time zone"),
    ("no address", replace("address: 252 Grays Inn Rd, London\n", ""), 1, "address: required"),
    (
        "bad online_url",
        replace("venue:", "online_url: meet.jit.si/x\nvenue:"),
        6,
        "online_url: must be a plain http(s):// URL",
    ),
    (
        "yaml",
        replace("title: Meeting", "title: [unclosed"),
        2,
        "title: a value starting with '[' is read by YAML as a list or a set of keys; "
        'put the whole value in quotes: title: "[unclosed"',
    ),
    (
        "unquoted colon",
        replace("venue: Calthorpe Arms", "venue: Calthorpe Arms: upstairs room"),
        6,
        "venue: the value 'Calthorpe Arms: upstairs room' has ': ' in it, which YAML reads "
        'as the start of another key; put the whole value in quotes: venue: "Calthorpe '
        'Arms: upstairs room"',
    ),
    (
        "day first date",
        replace("2099-09-11T14:30", "14/03/2099 18:30"),
        5,
        "starts_at: '14/03/2099 18:30' is not a date and time; write it as 2099-03-14 18:30",
    ),
    (
        "organiser without a name",
        replace("organiser:\n  name: CWO\n  email:", "organiser:"),
        8,
        "organiser: 'events@leftcom.example' is not a name and an email address; write it "
        "as organiser: {name: CWO, email: events@example.org} (or CWO <events@example.org>)",
    ),
    ("no fence", replace("\n---\nDear", "\nDear"), 1, "no closing '---'"),
    (
        "subject syntax",
        replace('{{ subscriber.first_name }}"', '{{ subscriber.first_name"'),
        3,
        "template syntax error",
    ),
    ("body syntax", append("{% if subscriber.name %}\nno end\n"), LAST + 1, "syntax error"),
    ("undefined name", append("{{ subscribr.name }}\n"), LAST + 1, "'subscribr' is undefined"),
    ("unknown event field", append("{{ event.venu }}\n"), LAST + 1, "'event.venu' is undefined"),
    ("unknown filter", append("{{ subscriber.name | shout }}\n"), LAST + 1, "shout"),
    (
        "filter check",  # Jinja asserts on truncate's length: a traceback, before
        replace('{{ subscriber.first_name }}"', '{{ subscriber.name | truncate(1) }}"'),
        3,
        "expected length >= 3",
    ),
    (
        "autoescape",
        append("{% autoescape false %}x{% endautoescape %}\n"),
        LAST + 1,
        "autoescape",
    ),
    (
        "fails for everyone",
        append("{{ '{0} {1}'.format(subscriber.first_name) }}\n"),
        LAST + 1,
        "IndexError",
    ),
    (
        "no such column",
        replace("attributes.city", "attributes.citty"),
        LAST,
        "no such column; did you mean 'city'?",
    ),
    ("missing layout", replace("venue:", "layout: fancy\nvenue:"), 6, "(layouts: default)"),
]


@pytest.fixture
def members(tmp_path: Path) -> Path:
    """A store with list 'members' (columns: city) in tmp_path."""
    csv = tmp_path / "members.csv"
    csv.write_text(MEMBERS, encoding="utf-8")
    with Store.open(f"sqlite:///{tmp_path / 'mailer.db'}") as store:
        import_file(store, csv, list_name="members", rejects_path=tmp_path / "rejects.csv")
    return tmp_path


def first_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors, result.stderr
    return errors[0]


def check_every_command(
    tmp_path: Path,
    server: SmtpTestServer,
    edit: Callable[[str], str],
    line: int,
    words: str,
    run: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    """validate, preview, send --dry-run and send fail the same way on a broken event:
    exit status 2, the same first error naming the event file (or the line a layout
    problem is on) and line, no preview written, no campaign stored, nothing sent."""
    event = tmp_path / "meeting.md"
    event.write_text(edit(GOOD), encoding="utf-8")
    env = cli_environment(tmp_path, server.port, MAILER_RATE_LIMIT="500")
    commands = {
        "validate": ["validate", str(event), "--list", "members"],
        "preview": ["preview", str(event), "--list", "members", "--out", "out"],
        "dry run": ["send", str(event), "--list", "members", "--dry-run"],
        "send": ["send", str(event), "--list", "members", "--yes"],
    }
    firsts = {}
    for name, args in commands.items():
        result = run(env, tmp_path, *args)
        assert result.returncode == 2, (name, result.stdout, result.stderr)
        firsts[name] = first_error(result)
    expected = f"error: {event}:{line}: "
    for name, first in firsts.items():
        assert first.startswith(expected), (name, first)
        assert words in first, (name, first)
    assert len(set(firsts.values())) == 1, firsts
    assert not (tmp_path / "out").exists()
    assert server.messages == []
    with Store.open(env["MAILER_DATABASE_URL"]) as store:
        assert store.campaigns() == []


@pytest.mark.parametrize(
    ("edit", "line", "words"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN]
)
def test_every_command_reports_the_same_file_and_line(
    members: Path,
    smtp_server_thread: SmtpTestServer,
    edit: Callable[[str], str],
    line: int,
    words: str,
) -> None:
    """Each broken file, the four commands run by mailer.cli.main in this process."""
    check_every_command(members, smtp_server_thread, edit, line, words, run_mailer_here)


def test_a_broken_file_fails_the_same_in_child_processes(
    members: Path, smtp_server_thread: SmtpTestServer
) -> None:
    """One broken file as the organiser meets it: four `python -m mailer` processes, each
    exiting 2 with the same one-line error and no traceback."""
    _name, edit, line, words = BROKEN[0]
    check_every_command(members, smtp_server_thread, edit, line, words, run_mailer)


def test_the_good_file_passes_every_command(
    members: Path, smtp_server_thread: SmtpTestServer
) -> None:
    """The file the broken ones are made from passes all four, so each failure above is
    the edit's."""
    tmp_path = members
    event = tmp_path / "meeting.md"
    event.write_text(GOOD, encoding="utf-8")
    env = cli_environment(tmp_path, smtp_server_thread.port, MAILER_RATE_LIMIT="500")
    for args in (
        ["validate", str(event), "--list", "members"],
        ["preview", str(event), "--list", "members", "--out", "out"],
        ["send", str(event), "--list", "members", "--dry-run"],
        ["send", str(event), "--list", "members", "--yes"],
    ):
        result = run_mailer(env, tmp_path, *args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        assert "warning" not in result.stderr, result.stderr
    assert sorted(m.rcpt_tos[0] for m in smtp_server_thread.messages) == [
        "ann.lee@example.org",
        "bo.kim@example.org",
    ]


async def test_the_engine_names_the_event_line_of_a_file_broken_after_scheduling(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    """A worker reads the event file at send time. Broken since it was scheduled, the
    campaign pauses with the event file's line (compiling alone blamed the layout), and
    nothing is sent."""
    event_path = tmp_path / "meeting.md"
    event_path.write_text(GOOD, encoding="utf-8")
    settings = make_settings(tmp_path, smtp_server.port)
    with Store.open(settings.database_url) as store:
        seed_list(store, tmp_path, 2)
        choice = start_or_resume(
            store, event_path=event_path, event=load_event(event_path), list_name="members"
        )
        event_path.write_text(GOOD + "{% if subscriber.name %}\nno end\n", encoding="utf-8")
        with pytest.raises(TemplateError) as caught:
            await send(settings, store, choice.campaign.id)
        assert (caught.value.path, caught.value.line) == (event_path, LAST + 1)
        campaign = store.get_campaign(choice.campaign.id)
        assert campaign.status is CampaignStatus.PAUSED
        assert f"{event_path}:{LAST + 1}: template syntax error" in (campaign.last_error or "")
    assert smtp_server.messages == []


def test_an_organiser_written_as_name_and_address_is_taken(
    members: Path, smtp_server_thread: SmtpTestServer
) -> None:
    """`organiser: CWO <events@leftcom.example>`, as mail programs write a sender, passes
    validate and is sent as the mapping would be: the organiser is the Reply-To."""
    tmp_path = members
    event = tmp_path / "meeting.md"
    edit = replace(
        "organiser:\n  name: CWO\n  email: events@leftcom.example",
        "organiser: CWO <events@leftcom.example>",
    )
    event.write_text(edit(GOOD), encoding="utf-8")
    env = cli_environment(tmp_path, smtp_server_thread.port, MAILER_RATE_LIMIT="500")
    checked = run_mailer_here(env, tmp_path, "validate", str(event), "--list", "members")
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, f"{event}: OK\n", "")
    sent = run_mailer_here(env, tmp_path, "send", str(event), "--list", "members", "--yes")
    assert sent.returncode == 0, sent.stderr
    assert len(smtp_server_thread.messages) == 2
    for message in smtp_server_thread.messages:
        assert b"\r\nReply-To: events@leftcom.example\r\n" in message.data


MANY_MISTAKES = """---
title: Meeting
subject: "Invitation for {{ subscriber.first_name }"
timezone: Europe/London
starts_at: 2099-09-11T14:30
venue: Calthorpe Arms
address: 252 Grays Inn Rd, London
organiser:
  name: CWO
  email: events@leftcom.example
---
Dear {{ subscriber.first_nam }},

{{ "{0} and {1}".format(subscriber.first_name) }}

{% if subscriber.attributes.city %}
See you in {{ subscriber.attributes.city }}.

{{ subscriber.name | shout }}

--- reminder ---
Tomorrow at {{ event.tme }}.
"""


def test_every_template_mistake_is_reported_in_one_check(members: Path) -> None:
    """Not one at a time (fix, run, meet the next): one check names each broken tag of the
    subject, the body and a follow-up, with its line, whether Jinja's parser, the name
    check or only running it finds it; validate and the dry run alike, exit status 2."""
    tmp_path = members
    event = tmp_path / "meeting.md"
    event.write_text(MANY_MISTAKES, encoding="utf-8")
    env = cli_environment(tmp_path, 1, MAILER_RATE_LIMIT="500")
    expected = [
        f"error: {event}:3: template syntax error: unexpected '}}'",
        f"error: {event}:12: 'subscriber.first_nam' is undefined",
        f"error: {event}:14: rendering the body: IndexError: tuple index out of range",
        f"error: {event}:16: template syntax error: {{% if %}} is never closed; end it with "
        "{% endif %}",
        f"error: {event}:19: template syntax error: No filter named 'shout'.",
        f"error: {event}:22: 'event.tme' is undefined",
        f"error: {event}: 6 problems found",
    ]
    for args in (["validate", str(event)], ["send", str(event), "--list", "members", "--dry-run"]):
        result = run_mailer_here(env, tmp_path, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert errors == expected, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


def test_a_failing_if_is_reported_once_not_with_its_endif(members: Path) -> None:
    """An `{% if %}` whose test fails when run is taken out to look for more mistakes;
    its `{% endif %}`, left alone, was then reported as a syntax error of its own, on a
    line with nothing wrong (a review)."""
    tmp_path = members
    event = tmp_path / "meeting.md"
    event.write_text(
        GOOD
        + "{% if subscriber.attributes.city.missing_method() %}\nNear.\n{% endif %}\n"
        + "{{ 'abc' | wordwrap(0) }}\n",
        encoding="utf-8",
    )
    result = run_mailer_here(cli_environment(tmp_path, 1), tmp_path, "validate", str(event))
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    # The mistake after the block is found too (the failing `if` kept as `if false`).
    assert errors == [
        f"error: {event}:{LAST + 1}: rendering the body: 'str object' has no attribute "
        "'missing_method'",
        f"error: {event}:{LAST + 4}: rendering the body: ValueError: invalid width 0 (must be > 0)",
        f"error: {event}: 2 problems found",
    ], result.stderr


def test_a_dry_run_refuses_what_the_real_send_refuses(
    members: Path, smtp_server_thread: SmtpTestServer
) -> None:
    """`send --dry-run` said "Dry run: 2 messages rendered ..." and exited 0 for sends the
    real run then refused. It makes the same checks first: for each send the real run
    refuses, the dry run exits with the same status and the same error, renders nothing
    and sends nothing."""
    tmp_path = members
    event = tmp_path / "meeting.md"
    event.write_text(GOOD, encoding="utf-8")
    env = cli_environment(tmp_path, smtp_server_thread.port, MAILER_RATE_LIMIT="500")
    first = run_mailer_here(env, tmp_path, "send", str(event), "--list", "members", "--yes")
    assert first.returncode == 0, first.stderr
    copy = tmp_path / "meeting-copy.md"
    copy.write_text(GOOD, encoding="utf-8")
    remote = {**env, "MAILER_SMTP_HOST": "smtp.leftcom.example"}
    refused = {
        "already sent": (env, [str(event)], "error: this event already went to 'members'"),
        "a copy of the file": (
            env,
            [str(copy)],
            "error: this event already went to 'members' from another file",
        ),
        "--only without RSVP": (
            env,
            [str(event), "--new", "--only", "yes"],
            "error: --only chooses people by their RSVP answers, and this event takes none",
        ),
        "demo sender through a real relay": (
            remote,
            [str(event), "--new"],
            "error: refusing to send through smtp.leftcom.example: MAILER_BASE_URL is not set",
        ),
    }
    for name, (environment, args, words) in refused.items():
        real = run_mailer_here(environment, tmp_path, "send", *args, "--list", "members", "--yes")
        dry = run_mailer_here(
            environment, tmp_path, "send", *args, "--list", "members", "--dry-run"
        )
        assert real.returncode != 0, (name, real.stdout, real.stderr)
        assert first_error(real).startswith(words), (name, real.stderr)
        assert (dry.returncode, first_error(dry)) == (real.returncode, first_error(real)), (
            name,
            dry.stdout,
        )
        assert "Dry run" not in dry.stdout, name
    assert len(smtp_server_thread.messages) == 2  # the first send's only
    with Store.open(env["MAILER_DATABASE_URL"]) as store:
        assert len(store.campaigns()) == 1


def test_a_dry_run_checks_the_messages_of_a_campaign_waiting_for_its_time(members: Path) -> None:
    """A real send is refused while the event's campaign to the list waits for its time;
    a dry run is how an organiser checks those messages before then (a review: it was
    refused too, its hints only sending or dropping the campaign)."""
    tmp_path = members
    event = tmp_path / "meeting.md"
    event.write_text(GOOD, encoding="utf-8")
    env = cli_environment(tmp_path, 2525)
    at = ("--at", "2098-05-01 10:00", "--tz", "Europe/London")
    scheduled = run_mailer_here(env, tmp_path, "schedule", str(event), "-l", "members", *at, "-y")
    assert scheduled.returncode == 0, scheduled.stderr
    real = run_mailer_here(env, tmp_path, "send", str(event), "--list", "members", "--yes")
    assert real.returncode != 0
    assert "is scheduled, scheduled for 2098-05-01 09:00 UTC" in first_error(real)
    dry = run_mailer_here(env, tmp_path, "send", str(event), "--list", "members", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "Note: campaign 1 of this event to 'members' is scheduled" in dry.stdout
    assert "Dry run: 2 messages rendered and composed" in dry.stdout
    with Store.open(env["MAILER_DATABASE_URL"]) as store:
        assert [c.status for c in store.campaigns()] == [CampaignStatus.SCHEDULED]


@pytest.mark.parametrize(
    ("source", "kept"),
    [
        ("a\n{% if x.y() %}\nb", "a\n{% if false %}\nb"),
        ("a\n{%- elif x -%}\nb", "a\n{%- elif false -%}\nb"),
        ("a\n{% for k, v in x.items() %}\nb", "a\n{% for _ in [] %}\nb"),
        ("a\n{% if x\n and y %}\nb", "a\n{% if false %}\n\nb"),  # its line breaks kept
        (
            "a\n{{ x.y() }} {% set z = 1 %}\nb",
            "a\n" + " " * len("{{ x.y() }} {% set z = 1 %}") + "\nb",
        ),
    ],
)
def test_a_failing_block_tag_keeps_its_place(source: str, kept: str) -> None:
    """What the trial render puts where a tag failed: an `if`, `elif` or `for` stays a
    block that cannot fail, so its end tag still closes it; anything else is blanked."""
    assert blank_tags_on(source, 2, keep_blocks=True) == kept
    assert blank_tags_on(source, 2) == "a\n" + re.sub(r"[^\n]", " ", source[2:-2]) + "\nb"
