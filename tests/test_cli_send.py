"""`mailer send` as an organiser runs it: safe by default, dry run, test send, report.

The first real send runs as a child process (`python -m mailer`); every other command
through mailer.cli.main in the test process (tests/cli_support.py): same words, statuses
and store, without 1.5-3.5 s of start-up each."""

from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path

import pytest

from campaign_support import EVENT, REPO_ROOT, cli_environment, run_mailer
from cli_support import run_mailer_here
from smtp_server import SmtpTestServer


def run(tmp_path: Path, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = cli_environment(tmp_path, port, MAILER_RATE_LIMIT="500")
    return run_mailer_here(env, tmp_path, *args)


@pytest.fixture
def imported(tmp_path: Path, smtp_server_thread: SmtpTestServer) -> SmtpTestServer:
    example = REPO_ROOT / "subscribers.example.csv"
    result = run(
        tmp_path,
        smtp_server_thread.port,
        "subscribers",
        "import",
        str(example),
        "--list",
        "members",
    )
    assert result.returncode == 0, result.stderr
    return smtp_server_thread


def test_dry_run_renders_everything_and_sends_nothing(
    tmp_path: Path, imported: SmtpTestServer
) -> None:
    result = run(tmp_path, imported.port, "send", str(EVENT), "--list", "members", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Dry run: 12 messages rendered and composed" in result.stdout
    assert "Nothing was sent." in result.stdout
    assert imported.messages == []
    listing = run(tmp_path, imported.port, "campaign", "list")
    assert "Invitation" not in listing.stdout  # no campaign, no ledger rows


def test_test_send_goes_to_one_address_and_is_not_recorded(
    tmp_path: Path, imported: SmtpTestServer
) -> None:
    result = run(
        tmp_path,
        imported.port,
        "send",
        str(EVENT),
        "--list",
        "members",
        "--test-to",
        "organiser@example.org",
    )
    assert result.returncode == 0, result.stderr
    # Whose message it is, so a stranger's name in the organiser's test is not a fault.
    assert (
        "Test message to organiser@example.org, personalised as Zoë Martin "
        "<zoe.martin@example.org> of list 'members' (--test-as picks another member): sent"
    ) in result.stdout
    assert [m.rcpt_tos for m in imported.messages] == [["organiser@example.org"]]
    assert b"Subject: [TEST] " in imported.messages[0].data
    assert "Invitation" not in run(tmp_path, imported.port, "campaign", "list").stdout


def test_test_send_as_another_member(tmp_path: Path, imported: SmtpTestServer) -> None:
    command = ("send", str(EVENT), "--list", "members", "--test-to", "organiser@example.org")
    result = run(tmp_path, imported.port, *command, "--test-as", "jose.garcia@example.com")
    assert result.returncode == 0, result.stderr
    assert "personalised as José García <jose.garcia@example.com> of list 'members': sent" in (
        result.stdout
    )
    assert "José".encode() in imported.messages[0].data or b"Jos=C3=A9" in imported.messages[0].data
    alone = run(tmp_path, imported.port, "send", str(EVENT), "--list", "members", "--test-as", "x")
    assert alone.returncode != 0
    assert "--test-as goes with --test-to" in alone.stderr
    assert "Traceback" not in alone.stderr
    assert len(imported.messages) == 1


def test_real_send_needs_confirmation(tmp_path: Path, imported: SmtpTestServer) -> None:
    """Without a terminal to ask in, a send without --yes is refused and sends nothing."""
    result = run(tmp_path, imported.port, "send", str(EVENT), "--list", "members")
    assert result.returncode == 1
    assert "not confirmed" in result.stderr
    assert "--yes" in result.stderr
    assert imported.messages == []
    # Nothing was written either: a campaign row would be work for a running worker.
    assert "Invitation" not in run(tmp_path, imported.port, "campaign", "list").stdout


def test_send_prints_progress_summary_and_csv_report(
    tmp_path: Path, imported: SmtpTestServer
) -> None:
    imported.rcpt_replies["tom.reid@example.org"] = "550 5.1.1 No such user"
    env = cli_environment(tmp_path, imported.port, MAILER_RATE_LIMIT="500")
    result = run_mailer(env, tmp_path, "send", str(EVENT), "--list", "members", "--yes")
    assert result.returncode == 0, result.stderr
    assert "11 sent, 0 deferred, 1 bounced, 0 failed, 0 skipped of 12" in result.stdout
    assert "Status: finished" in result.stdout
    report = run(tmp_path, imported.port, "campaign", "report", "1", "--csv")
    rows = list(csv.DictReader(io.StringIO(report.stdout)))
    assert len(rows) == 12
    bounced = [r for r in rows if r["status"] == "bounced"]
    assert [(r["email"], r["code"]) for r in bounced] == [("tom.reid@example.org", "550")]
    summary = run(tmp_path, imported.port, "campaign", "report", "1").stdout
    assert "tom.reid@example.org" in summary
    received = len(imported.messages)
    again = run(tmp_path, imported.port, "send", str(EVENT), "--list", "members", "--yes")
    # The same command after the campaign finished mails nobody a second time.
    assert again.returncode == 1
    assert "already went to 'members': campaign 1" in again.stderr
    assert "reached 11" in again.stderr
    assert "mailer campaign report 1" in again.stderr
    assert len(imported.messages) == received
    args = ("send", str(EVENT), "--list", "members", "--yes", "--new")
    new = run(tmp_path, imported.port, *args)
    assert "already went to 'members': campaign 1" in new.stderr  # said, even with --yes
    assert "0 bounced" in new.stdout  # the new campaign skips the bounced address
    assert "11 sent" in new.stdout
    assert len(imported.messages) == received + 11


def test_report_csv_neutralises_cells_a_spreadsheet_would_run(
    tmp_path: Path, smtp_server_thread: SmtpTestServer
) -> None:
    """Seen: reports wrote values starting `=`, `+`, `-`, `@` verbatim (OWASP CSV injection):
    a relay's reply and an address are outside text."""
    env = cli_environment(tmp_path, smtp_server_thread.port)
    members = tmp_path / "m.csv"
    members.write_text("email,name\n-dash@example.org,Dash\nok@example.org,Ok\n")
    assert (
        run_mailer_here(env, tmp_path, "subscribers", "import", str(members), "-l", "m").returncode
        == 0
    )
    smtp_server_thread.rcpt_replies["ok@example.org"] = '550 =HYPERLINK("http://x.example")'
    run_mailer_here(env, tmp_path, "send", str(EVENT), "-l", "m", "--yes")
    report = run_mailer_here(env, tmp_path, "campaign", "report", "1", "--csv")
    rows = {r["email"]: r for r in csv.DictReader(io.StringIO(report.stdout))}
    assert set(rows) == {"'-dash@example.org", "ok@example.org"}
    assert rows["ok@example.org"]["reply"].startswith("'=HYPERLINK")
