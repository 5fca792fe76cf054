"""`mailer validate`, `preview` and `send --dry-run` on failing templates, and where
`preview` writes: run as the organiser runs them, through mailer.cli.main in the test
process (tests/cli_support.py; test_event_checks_cli runs the same commands as child
processes)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cli_support import run_mailer_here
from test_compose import FRONT_FOR_TESTS

REPO_ROOT = Path(__file__).resolve().parent.parent
BODY_LINE = FRONT_FOR_TESTS.count("\n") + 1
KEY_ERROR_BODY = "Hello.\n\nSee you in {{ '{city}'.format_map(subscriber.attributes) }}.\n"
# Fails for one-word names only; the anonymous render (for the .ics) skips it.
INDEX_ERROR_BODY = (
    "Hello.\n{% if subscriber.name %}\n{{ '{1}, {0}'.format(*subscriber.name.split()) }}\n"
    "{% endif %}\n"
)


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_DATABASE_URL=f"sqlite:///{tmp_path / 'mailer.db'}",
        MAILER_VAR_DIR=str(tmp_path / "var"),
        MAILER_TEMPLATES_DIR=str(REPO_ROOT / "templates"),
        MAILER_SECRET_KEY="test-secret-key-0123456789abcdef0123456789",
        COLUMNS="200",  # Rich wraps at 80 columns without a terminal
    )
    return run_mailer_here(env, tmp_path, *args)


def first_error(stderr: str) -> str:
    """The first `error:` line (warnings, such as the 2021 event being past, come first)."""
    return next(line for line in stderr.splitlines() if line.startswith("error: "))


def write_event(tmp_path: Path, body: str, name: str = "meeting.md", title: str = "") -> Path:
    path = tmp_path / name
    front = FRONT_FOR_TESTS.replace("Test meeting", title) if title else FRONT_FOR_TESTS
    path.write_text(front + body, encoding="utf-8")
    return path


@pytest.fixture
def people(tmp_path: Path) -> Path:
    """Subscribers without a city column; Cher has a one-word name."""
    path = tmp_path / "people.csv"
    path.write_text("email,name\ncher@example.org,Cher\nann.lee@example.org,Ann Lee\n", "utf-8")
    return path


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        (KEY_ERROR_BODY, BODY_LINE + 2, "rendering the text part: KeyError: 'city'"),
        ("{{ '{0} {1}'.format(subscriber.first_name) }}\n", BODY_LINE, "IndexError"),
    ],
)
def test_validate_reports_key_and_index_errors_on_one_line(
    tmp_path: Path, people: Path, body: str, line: int, words: str
) -> None:
    """Where validate printed a traceback, it prints file:line and what went wrong. The
    KeyError needs the list: `city` is a column of some lists, not of this one."""
    imported = run(tmp_path, "subscribers", "import", str(people), "--list", "members")
    assert imported.returncode == 0, imported.stderr
    event = write_event(tmp_path, body)
    result = run(tmp_path, "validate", str(event), "--list", "members")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    first = first_error(result.stderr)
    assert first.startswith(f"error: {event}:{line}: ")
    assert words in first


def test_validate_without_a_list_accepts_any_attribute(tmp_path: Path) -> None:
    """The README's `{{ subscriber.attributes.city }}` passes validate (it failed, blaming
    the text layout, while preview and the dry run accepted it), saying it was not
    checked against any list."""
    event = write_event(tmp_path, "You live in {{ subscriber.attributes.city }}.\n")
    result = run(tmp_path, "validate", str(event))
    assert result.returncode == 0, result.stderr
    assert "attributes city not checked: give --list NAME" in result.stdout


def test_validate_with_a_list_checks_attribute_names_and_empty_values(tmp_path: Path) -> None:
    """With --list, a name that is no column is an error at its line (with the likely
    column), and a column some subscribers left empty is a warning saying how many;
    a fallback or an {% if %} around it silences the warning."""
    members = tmp_path / "members.csv"
    members.write_text(
        "email,name,city\na@example.org,Ann,London\nb@example.org,Bo,\nc@example.org,Cy,\n",
        encoding="utf-8",
    )
    imported = run(tmp_path, "subscribers", "import", str(members), "--list", "members")
    assert imported.returncode == 0, imported.stderr
    body = (
        "You live in {{ subscriber.attributes.city }}.\n\n"
        "{% if subscriber.attributes.city %}In {{ subscriber.attributes.city }}.{% endif %}\n\n"
        '{{ subscriber.attributes.city | default("your town", true) }}\n'
    )
    event = write_event(tmp_path, body)
    result = run(tmp_path, "validate", str(event), "--list", "members")
    assert result.returncode == 0, result.stderr
    warnings = [
        line
        for line in result.stderr.splitlines()
        if line.startswith("warning:") and "starts_at" not in line  # 2021 is long past
    ]
    assert warnings == [
        f"warning: {event}:{BODY_LINE}: subscriber.attributes.city: empty for 2 of 3 "
        "subscribers of list 'members'; their message shows nothing there"
    ]
    assert "(2 warnings)" in result.stdout  # and the one about 2021
    event.write_text(event.read_text("utf-8") + "{{ subscriber.attributes.town }}\n", "utf-8")
    result = run(tmp_path, "validate", str(event), "--list", "members")
    assert result.returncode == 2
    assert (
        f"error: {event}:{BODY_LINE + 5}: subscriber.attributes.town: list 'members' has no "
        "such column (columns: city)"
    ) in result.stderr


@pytest.mark.parametrize(
    ("body", "subscriber", "line", "words"),
    [
        (KEY_ERROR_BODY, "ann.lee@example.org", BODY_LINE + 2, "KeyError: 'city'"),
        (INDEX_ERROR_BODY, "cher@example.org", BODY_LINE + 2, "IndexError: "),
    ],
)
def test_preview_reports_key_and_index_errors_on_one_line(
    tmp_path: Path, people: Path, body: str, subscriber: str, line: int, words: str
) -> None:
    """preview prints `error: FILE:LINE: ...` (and a hint), exits 2, and writes nothing."""
    event = write_event(tmp_path, body)
    args = ["--subscribers", str(people), "--subscriber", subscriber, "--out", "out"]
    result = run(tmp_path, "preview", str(event), *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    first = first_error(result.stderr)
    assert first.startswith(f"error: {event}:{line}: rendering the ")
    assert words in first
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_dry_run_reports_the_recipient_whose_message_cannot_be_built(
    tmp_path: Path, people: Path
) -> None:
    """A KeyError for one subscriber is that subscriber's line in the dry-run report (file
    and line included), not a traceback; the run exits non-zero."""
    imported = run(tmp_path, "subscribers", "import", str(people), "--list", "members")
    assert imported.returncode == 0, imported.stderr
    event = write_event(tmp_path, INDEX_ERROR_BODY)
    result = run(tmp_path, "send", str(event), "--list", "members", "--dry-run")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode != 0
    assert "2 messages rendered" not in result.stdout
    failure = f"  cher@example.org: {event}:{BODY_LINE + 2}: rendering the text part: IndexError"
    assert any(line.startswith(failure) for line in result.stdout.splitlines()), result.stdout


def test_preview_refuses_to_write_through_a_symlink(tmp_path: Path, people: Path) -> None:
    """A link where a preview file goes is refused, its target untouched, and no preview
    file is written at all."""
    event = write_event(tmp_path, "Hi {{ subscriber.name }}\n")
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n", encoding="utf-8")
    (out / "meeting.txt").symlink_to(victim)
    result = run(tmp_path, "preview", str(event), "--subscribers", str(people), "--out", "out")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "out/meeting.txt: is a symbolic link" in result.stderr
    assert victim.read_text(encoding="utf-8") == "keep me\n"
    assert sorted(p.name for p in out.iterdir()) == ["meeting.txt"]
    assert (out / "meeting.txt").is_symlink()


def test_events_with_dotted_names_get_their_own_previews(tmp_path: Path, people: Path) -> None:
    """`a.b.md` and `a.c.md` are previewed as a.b.* and a.c.*, not both as a.*; a second
    run replaces the files and leaves nothing else behind."""
    first = write_event(tmp_path, "First body\n", name="a.b.md", title="First")
    second = write_event(tmp_path, "Second body\n", name="a.c.md", title="Second")
    for event in (first, second, first):
        result = run(tmp_path, "preview", str(event), "--subscribers", str(people), "--out", "o")
        assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == [f"{stem}{suffix}" for stem in ("a.b", "a.c") for suffix in SUFFIXES]
    assert "First body" in (tmp_path / "o" / "a.b.txt").read_text(encoding="utf-8")
    assert "Second body" in (tmp_path / "o" / "a.c.txt").read_text(encoding="utf-8")
    assert "SUMMARY:Second" in (tmp_path / "o" / "a.c.ics").read_text(encoding="utf-8")


SUFFIXES = sorted([".html", ".txt", ".ics", ".eml"])
