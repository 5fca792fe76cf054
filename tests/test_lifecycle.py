"""The campaign lifecycle through the CLI: resume keeps a schedule, send-now sends early,
scheduled campaigns show their audience, confirmations count what will really go."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from campaign_support import EVENT, answer_at_a_terminal, cli_environment
from cli_support import run_mailer_here
from mailer.campaigns import lifecycle
from mailer.errors import CampaignError
from mailer.message.event import load_event
from mailer.models import CampaignStatus, DeliveryStatus
from mailer.store import Store
from smtp_server import SmtpTestServer


def members(tmp_path: Path, port: int, count: int = 4) -> dict[str, str]:
    env = cli_environment(tmp_path, port)
    path = tmp_path / "members.csv"
    path.write_text("email,name\n" + "".join(f"m{i}@example.org,M {i}\n" for i in range(count)))
    result = run_mailer_here(env, tmp_path, "subscribers", "import", str(path), "--list", "members")
    assert result.returncode == 0, result.stderr
    return env


def schedule_in_an_hour(env: dict[str, str], tmp_path: Path) -> datetime:
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    args = ("schedule", str(EVENT), "-l", "members", "--at", f"{when:%Y-%m-%d %H:%M:%S}")
    result = run_mailer_here(env, tmp_path, *args, "--tz", "UTC", "--yes")
    assert result.returncode == 0, result.stderr
    return when


def test_resume_puts_a_paused_scheduled_campaign_back_on_its_time(
    tmp_path: Path, smtp_server_thread: SmtpTestServer
) -> None:
    """Seen: resume on a paused scheduled campaign sent it at once, 30 minutes early,
    with "0 to send" in the prompt."""
    env = members(tmp_path, smtp_server_thread.port)
    when = schedule_in_an_hour(env, tmp_path)
    listing = run_mailer_here(env, tmp_path, "campaign", "list").stdout
    assert " 4 " in listing  # the audience, not 0, before the ledger exists
    shown = run_mailer_here(env, tmp_path, "campaign", "show", "1").stdout
    assert "progress:   0/4 done" in shown
    assert "audience:   4" in shown
    assert run_mailer_here(env, tmp_path, "campaign", "pause", "1").returncode == 0
    asked = run_mailer_here(env, tmp_path, "campaign", "resume", "1")
    assert asked.returncode == 1  # no terminal to confirm on
    assert "4 subscriber(s)" in asked.stderr
    resumed = run_mailer_here(env, tmp_path, "campaign", "resume", "1", "--yes")
    assert resumed.returncode == 0, resumed.stderr
    assert "scheduled again" in resumed.stdout
    assert smtp_server_thread.messages == []
    with Store.open(env["MAILER_DATABASE_URL"]) as store:
        campaign = store.get_campaign(1)
    assert campaign.status is CampaignStatus.SCHEDULED
    assert campaign.scheduled_at == when


def test_send_now_sends_a_scheduled_campaign_early_after_confirming(
    tmp_path: Path, smtp_server_thread: SmtpTestServer
) -> None:
    env = members(tmp_path, smtp_server_thread.port)
    schedule_in_an_hour(env, tmp_path)
    asked = run_mailer_here(env, tmp_path, "campaign", "send-now", "1")
    assert asked.returncode == 1
    assert "now to 4 subscriber(s)" in asked.stderr
    assert smtp_server_thread.messages == []
    sent = run_mailer_here(env, tmp_path, "campaign", "send-now", "1", "--yes")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert sorted(smtp_server_thread.recipients) == [f"m{i}@example.org" for i in range(4)]
    again = run_mailer_here(env, tmp_path, "campaign", "send-now", "1", "--yes")
    assert again.returncode == 1
    assert "is finished; cannot send-now it" in again.stderr


def test_resend_unknown_confirmation_counts_the_unknown_rows(
    tmp_path: Path, smtp_server_thread: SmtpTestServer
) -> None:
    """Seen: `--resend-unknown`'s confirmation said "0 to send"."""
    env = members(tmp_path, smtp_server_thread.port)
    sent = run_mailer_here(env, tmp_path, "send", str(EVENT), "-l", "members", "--yes")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    with Store.open(env["MAILER_DATABASE_URL"]) as store:
        ids = [r.id for r in store.fetch_due(1, after_id=0, limit=10, include_unknown=True)]
        assert ids == []  # all sent: stand in a crash that lost two outcomes
        with store.engine.begin() as connection:
            from sqlalchemy import update

            from mailer.store.schema import deliveries

            connection.execute(
                update(deliveries)
                .where(deliveries.c.email.in_(["m1@example.org", "m2@example.org"]))
                .values(status=DeliveryStatus.UNKNOWN.value)
            )
    plain = run_mailer_here(env, tmp_path, "campaign", "resume", "1", "--yes")
    assert plain.returncode == 1
    assert "cannot resume it" in plain.stderr
    asked = run_mailer_here(env, tmp_path, "campaign", "resume", "1", "--resend-unknown")
    assert "(2 to send)" in asked.stderr


def test_lifecycle_rules_refuse_what_the_table_forbids(tmp_path: Path) -> None:
    from campaign_support import seed_list

    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        seed_list(store, tmp_path, 2)
        event = load_event(EVENT)
        later = datetime.now(UTC) + timedelta(days=1)
        campaign = lifecycle.schedule(
            store,
            lifecycle.plan_schedule(store, event=event, list_name="members", new=False),
            event=event,
            event_path=EVENT,
            when=later,
        )
        lifecycle.cancel(store, campaign.id)
        for action in (lifecycle.pause, lifecycle.cancel):
            with pytest.raises(CampaignError, match="is cancelled; cannot"):
                action(store, campaign.id)
        with pytest.raises(CampaignError, match="cannot reschedule"):
            lifecycle.reschedule(store, campaign.id, later)
        with pytest.raises(CampaignError, match="cannot resume"):
            lifecycle.plan_resume(store, campaign.id)


def test_the_send_confirmation_shows_what_recipients_will_see_and_defaults_to_no(
    tmp_path: Path, smtp_server_thread: SmtpTestServer
) -> None:
    """At a real terminal (a pty): From, Reply-To, subject, the unsubscribe base, the list
    and its mailable count, and the relay, then a question whose default is No."""
    env = members(tmp_path, smtp_server_thread.port, count=3)
    env["MAILER_REPLY_TO"] = "replies@cwo.example.org"
    # Enter: the default.
    status, screen = answer_at_a_terminal(
        env, tmp_path, b"", "send", str(EVENT), "--list", "members"
    )
    assert status == 0
    assert "From:         Mailer demo <invitations@cwo.example.org>" in screen
    assert "Reply-To:     replies@cwo.example.org" in screen
    assert "Subject:      Invitation: CWO London Public Meeting" in screen
    assert "Unsubscribe:  http://127.0.0.1:8000/u/..." in screen
    assert "To:           3 subscriber(s) of list 'members'" in screen
    assert f"Relay:        127.0.0.1:{smtp_server_thread.port} (none)" in screen
    assert "Nothing was changed." in screen
    assert smtp_server_thread.messages == []
    with Store.open(env["MAILER_DATABASE_URL"]) as store:
        assert store.campaigns() == []


def test_the_report_of_a_paused_campaign_says_why_and_for_whom(
    tmp_path: Path, smtp_server_thread: SmtpTestServer
) -> None:
    """A campaign paused before it started (a worker found its event file broken): the
    report gives the note `campaign show` gives, and whom it is for (it said "of 0")."""
    env = members(tmp_path, smtp_server_thread.port)
    schedule_in_an_hour(env, tmp_path)
    with Store.open(env["MAILER_DATABASE_URL"]) as store:
        assert store.claim_campaign(
            1,
            owner="worker",
            lease=timedelta(seconds=30),
            allowed=(CampaignStatus.SCHEDULED,),
            early=True,
        )
        store.release_campaign(
            1, owner="worker", status=CampaignStatus.PAUSED, error="paused: broken template"
        )
    report = run_mailer_here(env, tmp_path, "campaign", "report", "1")
    assert report.returncode == 0, report.stderr
    assert "paused: 0 sent" in report.stdout
    assert "of 4;" in report.stdout
    assert "Note: paused: broken template" in report.stdout
