"""Bounces end to end against real mail servers: Debian's Postfix as the relay, Dovecot as
the bounce mailbox (tests/mail_servers.py), on SQLite and PostgreSQL.

`mailer send` hands a campaign to Postfix with VERP envelope senders; Postfix accepts
every recipient, then bounces those at a domain without mailboxes and mails its own
RFC 3464 DSNs to `bouncesN+TOKEN@lists.example.org`, which it delivers into the Maildir
Dovecot serves. `mailer bounces fetch` reads them over IMAP or POP3; the store must then
hold each bounced address suppressed once, its ledger row still `sent` and marked
bounced after acceptance. A fetch killed with SIGKILL right after a message's outcome
was committed and before the message was moved must, once run again, count each
bounce once.
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from campaign_support import (
    cli_environment,
    mailer_command,
    make_settings,
    new_campaign,
    run_mailer,
    send,
)
from mail_servers import (
    BOX_NAMES,
    DEAD_DOMAIN,
    LISTS_DOMAIN,
    LIVE_DOMAIN,
    PASSWORD,
    MailServers,
    StallingProxy,
    mail_servers,
)
from mailer.audience.importer import import_file
from mailer.cli import app
from mailer.models import (
    DeliveryStatus,
    FeedbackAction,
    FeedbackKind,
    LaterOutcome,
    SubscriberStatus,
    SuppressionReason,
    UnsubscribeSource,
)
from mailer.store import Store

pytestmark = pytest.mark.slow

_boxes = itertools.count(1)


@pytest.fixture(scope="module")
def servers() -> Iterator[MailServers]:
    with mail_servers() as running:
        yield running


@pytest.fixture
def box() -> str:
    """A bounce mailbox of this test's own (the servers are shared by the module)."""
    return BOX_NAMES[next(_boxes)]


def environment(
    tmp_path: Path, servers: MailServers, database_url: str, box: str
) -> dict[str, str]:
    return cli_environment(
        tmp_path,
        servers.smtp_port,
        MAILER_DATABASE_URL=database_url,
        MAILER_FROM_ADDRESS=f"events@{LISTS_DOMAIN}",
        MAILER_BOUNCE_ADDRESS=f"{box}@{LISTS_DOMAIN}",
        MAILER_BOUNCE_MAILBOX=servers.imap_url(box),
        MAILER_BOUNCE_PASSWORD=PASSWORD,
        MAILER_RATE_LIMIT="500",
    )


def send_campaign(
    tmp_path: Path, servers: MailServers, database_url: str, box: str, *, dead: int, live: int
) -> tuple[list[str], list[str]]:
    """Import `dead` addresses Postfix will bounce and `live` ones it delivers, and send
    them the invitation through Postfix (in this process: the CLI's own send is tested
    elsewhere; here each `mailer` start-up would only add seconds)."""
    dead_addresses = [f"gone{i}@{DEAD_DOMAIN}" for i in range(dead)]
    live_addresses = [f"reader{i}@{LIVE_DOMAIN}" for i in range(live)]
    members = tmp_path / "members.csv"
    members.write_text(
        "email,name\n" + "".join(f"{a},Reader\n" for a in dead_addresses + live_addresses)
    )
    settings = make_settings(
        tmp_path,
        servers.smtp_port,
        database_url=database_url,
        from_address=f"events@{LISTS_DOMAIN}",
        bounce_address=f"{box}@{LISTS_DOMAIN}",
    )
    with Store.open(database_url) as store:
        import_file(store, members, list_name="members", rejects_path=tmp_path / "rejects.csv")
        campaign_id = new_campaign(store)
        result = asyncio.run(send(settings, store, campaign_id))
        assert store.delivery_counts(campaign_id).sent == dead + live, result.message
    return dead_addresses, live_addresses


def assert_bounced_once(database_url: str, dead: list[str], live: list[str]) -> None:
    with Store.open(database_url) as store:
        events = store.feedback_events(campaign_id=1)
        assert Counter(e.email for e in events) == Counter(dead)
        assert {(e.kind, e.action, e.status) for e in events} == {
            (FeedbackKind.HARD_BOUNCE, FeedbackAction.SUPPRESSED, "5.1.1")
        }
        rows = {row.email: row for row in store.iter_report(1)}
        for address in dead:
            # The relay accepted it: the row stays sent, and gains the later bounce.
            assert rows[address].status is DeliveryStatus.SENT
            assert rows[address].later is LaterOutcome.BOUNCED
            record = store.subscriber_record(address)
            assert record.subscriber is not None
            assert record.subscriber.status is SubscriberStatus.BOUNCED
            [entry] = record.history
            assert (entry.reason, entry.source, entry.campaign_id) == (
                SuppressionReason.BOUNCED,
                UnsubscribeSource.BOUNCE,
                1,
            )
            assert entry.lifted_at is None
        for address in live:
            assert rows[address].status is DeliveryStatus.SENT
            assert rows[address].later is None
            assert store.subscriber_record(address).history == []
        counts = store.feedback_counts(1)
        assert (counts.bounced, counts.soft_bounced, counts.complained) == (len(dead), 0, 0)


def cli(env: dict[str, str], tmp_path: Path, *args: str) -> str:
    """`mailer ARGS` in this process (a child's start-up costs seconds on a loaded
    machine); the fetch each test is about runs as a real child process."""
    runner = CliRunner()
    result = runner.invoke(app, list(args), env={**env, "MAILER_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    return result.output


def write_to_box(servers: MailServers, box: str, text: str) -> None:
    """A person's message to the bounce address, through Postfix like the rest."""
    import smtplib

    message = (
        f"From: someone@{LIVE_DOMAIN}\r\nTo: {box}@{LISTS_DOMAIN}\r\n"
        f"Subject: a question\r\nMessage-ID: <q1@{LIVE_DOMAIN}>\r\n\r\n{text}\r\n"
    )
    with smtplib.SMTP("127.0.0.1", servers.smtp_port) as client:
        client.sendmail(f"someone@{LIVE_DOMAIN}", [f"{box}@{LISTS_DOMAIN}"], message.encode())


def test_postfix_dsns_fetched_over_imap_suppress_once_and_mark_the_ledger(
    servers: MailServers, database_url: str, box: str, tmp_path: Path
) -> None:
    env = environment(tmp_path, servers, database_url, box)
    dead, live = send_campaign(tmp_path, servers, database_url, box, dead=4, live=2)
    write_to_box(servers, box, "Can I bring a friend?")
    servers.wait_for_mail(box, len(dead) + 1)

    fetched = run_mailer(env, tmp_path, "bounces", "fetch")
    assert fetched.returncode == 0, fetched.stderr
    assert "Read 5 message(s)" in fetched.stdout
    assert "4 handled (4 suppressed), 1 left for a person" in fetched.stdout
    assert_bounced_once(database_url, dead, live)
    # Handled mail moved to Processed; the person's message stays, still unread.
    assert servers.folder_count(box, "Processed") == 4
    assert servers.inbox_count(box) == 1
    [left] = [p for sub in ("new", "cur") for p in (servers.maildir(box) / sub).iterdir()]
    assert ":2," not in left.name or "S" not in left.name.split(":2,")[1]

    again = cli(env, tmp_path, "bounces", "fetch")
    assert "Read 1 message(s)" in again
    assert "0 handled" in again
    assert_bounced_once(database_url, dead, live)
    # With a folder for people's mail, it goes there (created on the server) instead.
    cli(env | {"MAILER_BOUNCE_UNHANDLED_FOLDER": "For people"}, tmp_path, "bounces", "fetch")
    assert servers.inbox_count(box) == 0
    assert servers.folder_count(box, "For people") == 1

    shown = cli(env, tmp_path, "campaign", "show", "1")
    assert "0 refused by the relay, 4 bounced after acceptance, 0 soft" in shown
    assert "bounce rate 66.7%" in shown
    assert "WARNING:    bounce rate 66.7% is above 2%" in shown
    report = cli(env, tmp_path, "campaign", "report", "1", "--csv")
    later = {row["email"]: row["later"] for row in csv.DictReader(io.StringIO(report))}
    assert later == {**dict.fromkeys(dead, "bounced"), **dict.fromkeys(live, "")}
    summary = cli(env, tmp_path, "campaign", "report", "1")
    assert "bounced after acceptance" in summary
    listed = cli(env, tmp_path, "bounces", "list", "--campaign", "1")
    assert all(address in listed for address in dead), listed
    assert not any(address in listed for address in live)


def test_postfix_dsns_fetched_over_pop3_are_deleted_once_recorded(
    servers: MailServers, database_url: str, box: str, tmp_path: Path
) -> None:
    env = environment(tmp_path, servers, database_url, box)
    env["MAILER_BOUNCE_MAILBOX"] = servers.pop3_url(box)
    dead, live = send_campaign(tmp_path, servers, database_url, box, dead=3, live=1)
    # Lines longer than poplib takes (2,048 octets; HTML mail often has them), one longer
    # than the 64 KiB a line is kept to: read and left alone, the session still in step.
    long_lines = f"{'x' * 5000}\r\n{'y' * 100_000}\r\n"
    write_to_box(servers, box, f"Is there step-free access?\r\n{long_lines}")
    servers.wait_for_mail(box, len(dead) + 1)

    fetched = run_mailer(env, tmp_path, "bounces", "fetch")
    assert fetched.returncode == 0, fetched.stderr
    assert "3 handled (3 suppressed), 1 left for a person" in fetched.stdout
    assert_bounced_once(database_url, dead, live)
    assert servers.inbox_count(box) == 1  # the person's message, not deleted

    again = cli(env, tmp_path, "bounces", "fetch")
    assert "Read 1 message(s)" in again
    assert_bounced_once(database_url, dead, live)


@pytest.mark.parametrize(
    ("protocol", "command"),
    [("imap", rb"^\S+ UID (MOVE|COPY) "), ("pop3", rb"^QUIT")],
)
def test_fetch_killed_after_a_commit_before_the_move_counts_each_bounce_once(
    servers: MailServers,
    database_url: str,
    box: str,
    tmp_path: Path,
    protocol: str,
    command: bytes,
) -> None:
    """IMAP: killed holding the third message, recorded but not yet moved. POP3: killed
    before QUIT, so the server deletes nothing and every recorded message is read again."""
    env = environment(tmp_path, servers, database_url, box)
    dead, live = send_campaign(tmp_path, servers, database_url, box, dead=5, live=1)
    servers.wait_for_mail(box, len(dead))
    port = servers.imap_port if protocol == "imap" else servers.pop3_port
    proxy = StallingProxy(port, pattern=command, nth=3 if protocol == "imap" else 1)
    try:
        killed_env = dict(env)
        url = servers.imap_url(box) if protocol == "imap" else servers.pop3_url(box)
        killed_env["MAILER_BOUNCE_MAILBOX"] = url.replace(f":{port}", f":{proxy.port}")
        child = subprocess.Popen(
            mailer_command("bounces", "fetch"),
            cwd=tmp_path,
            env=killed_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert proxy.stalled.wait(timeout=60), "the fetch never got to the stalled command"
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait(timeout=30)
    finally:
        proxy.close()
    with Store.open(database_url) as store:
        recorded = len(store.feedback_events(campaign_id=1))
    expected_recorded = 3 if protocol == "imap" else len(dead)
    assert recorded == expected_recorded
    # IMAP: two moved, the third recorded but still there; POP3: nothing deleted.
    assert servers.inbox_count(box) == (len(dead) - 2 if protocol == "imap" else len(dead))

    rerun = cli(env | {"MAILER_BOUNCE_MAILBOX": url}, tmp_path, "bounces", "fetch")
    seen_before = 1 if protocol == "imap" else len(dead)
    assert f"{seen_before} already recorded earlier" in rerun
    assert_bounced_once(database_url, dead, live)
    assert servers.inbox_count(box) == 0


def test_config_check_logs_in_to_the_bounce_mailbox(servers: MailServers, tmp_path: Path) -> None:
    """`mailer config check` opens the mailbox (IMAP and POP3) and says why it cannot."""
    from mailer.campaigns.doctor import Status, check_bounce_mailbox

    box = BOX_NAMES[0]
    for url in (servers.imap_url(box), servers.pop3_url(box)):
        settings = make_settings(
            tmp_path, servers.smtp_port, bounce_mailbox=url, bounce_password=PASSWORD
        )
        found = check_bounce_mailbox(settings)
        assert found is not None
        assert found.status is Status.OK, found.line
        wrong_password = {"bounce_password": SecretStr("nope")}
        wrong = check_bounce_mailbox(settings.model_copy(update=wrong_password))
        assert wrong is not None
        assert wrong.status is Status.FAIL
        assert "nope" not in wrong.line
        assert "MAILER_BOUNCE_PASSWORD" in wrong.line
