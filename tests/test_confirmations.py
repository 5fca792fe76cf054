"""Destructive list commands ask first (issue 10): at a terminal they show what will go
and default to No; without one they refuse unless --yes; declined, nothing changes.

The questions are asked of a real terminal (a pty) in a child process; the set-up, the
counts and the refusals without a terminal run mailer.cli.main in this process
(tests/cli_support.py), whose standard input is no terminal either."""

from __future__ import annotations

from pathlib import Path

from campaign_support import answer_at_a_terminal, cli_environment
from cli_support import run_mailer_here


def _members(tmp_path: Path) -> dict[str, str]:
    env = cli_environment(tmp_path, 2525)
    (tmp_path / "people.csv").write_text(
        "email,name\nann@example.org,Ann\nbob@example.org,Bob\n", encoding="utf-8"
    )
    imported = run_mailer_here(
        env, tmp_path, "subscribers", "import", "people.csv", "-l", "members"
    )
    assert imported.returncode == 0, imported.stderr
    run_mailer_here(env, tmp_path, "subscribers", "import", "people.csv", "-l", "friends")
    return env


def _count(env: dict[str, str], cwd: Path, list_name: str) -> str:
    return run_mailer_here(env, cwd, "subscribers", "count", "-l", list_name).stdout.strip()


def test_remove_asks_first(tmp_path: Path) -> None:
    env = _members(tmp_path)
    unasked = run_mailer_here(env, tmp_path, "subscribers", "remove", "ann@example.org")
    assert unasked.returncode == 1
    assert "not confirmed: Erase ann@example.org and everything known about them?" in (
        unasked.stderr
    )
    assert "pass --yes to confirm" in unasked.stderr

    status, screen = answer_at_a_terminal(
        env, tmp_path, b"", "subscribers", "remove", "ann@example.org"
    )
    assert status == 0
    assert "ann@example.org is on: friends, members." in screen
    assert "unsubscribes, bounces and complaints are kept" in screen
    assert "Nothing was changed." in screen
    assert (_count(env, tmp_path, "members"), _count(env, tmp_path, "friends")) == ("2", "2")

    status, screen = answer_at_a_terminal(
        env, tmp_path, b"y", "subscribers", "remove", "ann@example.org", "--list", "members"
    )
    assert status == 0
    assert "Remove ann@example.org from list 'members'?" in screen
    assert "Removed ann@example.org from list 'members'." in screen
    assert (_count(env, tmp_path, "members"), _count(env, tmp_path, "friends")) == ("1", "2")

    erased = run_mailer_here(env, tmp_path, "subscribers", "remove", "ann@example.org", "-y")
    assert erased.returncode == 0, erased.stderr
    assert _count(env, tmp_path, "friends") == "1"


def test_delete_a_list_asks_first(tmp_path: Path) -> None:
    env = _members(tmp_path)
    status, screen = answer_at_a_terminal(env, tmp_path, b"n", "lists", "delete", "members")
    assert status == 0
    assert "List 'members' (no title): 2 subscribed, 0 unsubscribed." in screen
    assert "Nothing was changed." in screen
    assert _count(env, tmp_path, "members") == "2"

    status, screen = answer_at_a_terminal(env, tmp_path, b"y", "lists", "delete", "members")
    assert status == 0
    assert "Deleted list 'members': 2 member(s) taken off" in screen
    assert "members" not in run_mailer_here(env, tmp_path, "lists").stdout
    assert _count(env, tmp_path, "friends") == "2"
