"""Cancelling an invitation leaves its scheduled reminder (it goes to those who answered
yes or maybe, whoever invited them); `mailer campaign cancel` says so, with the command
that cancels the reminder too."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from campaign_support import cli_environment, seed_list
from cli_support import run_mailer_here
from mailer.campaigns import lifecycle
from mailer.message.event import load_event
from mailer.models import CampaignStatus, MessageKind
from mailer.store import Store
from test_rsvp import future_event


def test_cancelling_an_invitation_names_the_reminder_still_scheduled(tmp_path: Path) -> None:
    env = cli_environment(tmp_path, 9)
    with Store.open(env["MAILER_DATABASE_URL"]) as store:
        seed_list(store, tmp_path, 2)
        event_file = future_event(tmp_path)
        event = load_event(event_file)
        plan = lifecycle.plan_schedule(store, event=event, list_name="members", new=False)
        when = datetime(2031, 9, 1, 9, 0, tzinfo=UTC)
        invitation = lifecycle.schedule(store, plan, event=event, event_path=event_file, when=when)
        (reminder,) = [c for c in store.campaigns() if c.message is MessageKind.REMINDER]

    cancelled = run_mailer_here(env, tmp_path, "campaign", "cancel", str(invitation.id), "--yes")
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert (
        f"Its reminder, campaign {reminder.id}, is still scheduled for 2031-09-10 13:30 UTC"
        in cancelled.stdout
    )
    assert f"`mailer campaign cancel {reminder.id}` cancels it too." in cancelled.stdout

    # The reminder itself has no reminder to mention.
    second = run_mailer_here(env, tmp_path, "campaign", "cancel", str(reminder.id), "--yes")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Its reminder" not in second.stdout
    with Store.open(env["MAILER_DATABASE_URL"]) as store:
        assert store.get_campaign(invitation.id).status is CampaignStatus.CANCELLED
        assert store.get_campaign(reminder.id).status is CampaignStatus.CANCELLED
