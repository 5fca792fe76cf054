"""`mailer campaign ...`: inspect, resume, send now, pause and cancel campaigns."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from mailer.cli import common

if TYPE_CHECKING:
    from mailer.models import CampaignRecord
    from mailer.store import Store
from mailer.cli.schedule_cmd import reschedule
from mailer.cli.send_cmd import SenderProcesses
from mailer.models import DeliveryCounts, DeliveryStatus, FeedbackCounts, LaterOutcome

CampaignId = Annotated[int, typer.Argument(metavar="ID", help="The campaign's number.")]


def register(app: typer.Typer) -> None:
    campaign = typer.Typer(help="Inspect and control campaigns.", no_args_is_help=True)
    app.add_typer(campaign, name="campaign")
    campaign.command("list")(list_campaigns)
    campaign.command("show")(show)
    campaign.command("status", hidden=True)(show)  # the old name of `show`
    campaign.command("report")(report)
    campaign.command("resume")(resume)
    campaign.command("send-now")(send_now)
    campaign.command("pause")(pause)
    campaign.command("cancel")(cancel)
    campaign.command("reschedule")(reschedule)


def _when(value: object) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S} UTC" if value else "-"


def list_campaigns(ctx: typer.Context) -> None:
    """Every campaign with its status and delivery counts."""
    from mailer.campaigns import lifecycle
    from mailer.message.headline import campaign_subject

    with common.open_store(common.settings_from(ctx), existing=True) as store:
        table = Table("id", "status", "subject", "list", "scheduled", "sent", "other", "total")
        for campaign in store.campaigns():
            counts = store.delivery_counts(campaign.id)
            other = ", ".join(f"{n} {k}" for k, n in counts.as_dict().items() if n and k != "sent")
            total = lifecycle.audience(store, campaign)
            table.add_row(
                str(campaign.id),
                campaign.status.value,
                # Text: a `[first name]` stand-in (or a subject's own `[...]`) is no markup.
                Text(campaign_subject(campaign)),
                campaign.list_name,
                _when(campaign.scheduled_at),
                str(counts.sent),
                other or "-",
                str(total),
            )
    common.console.print(table)


def show(ctx: typer.Context, campaign_id: CampaignId) -> None:
    """A campaign's state and live progress, read from the store."""
    from mailer.campaigns import lifecycle
    from mailer.cli.progress import describe
    from mailer.message.headline import campaign_subject

    with common.open_store(common.settings_from(ctx), existing=True) as store:
        campaign = store.get_campaign(campaign_id)
        counts = store.delivery_counts(campaign_id)
        next_retry = store.next_retry_at(campaign_id)
        total = lifecycle.audience(store, campaign)
        unsubscribes = store.campaign_unsubscribes(campaign_id)
        later = store.feedback_counts(campaign_id)
    subject = campaign_subject(campaign)
    lines = [
        f"Campaign {campaign.id}: {subject}",
        *(
            [f"  subject:    {campaign.subject} (as written)"]
            if subject != campaign.subject
            else []
        ),
        f"  event:      {campaign.event_path}",
        f"  list:       {campaign.list_name}",
        f"  status:     {campaign.status.value}",
        f"  scheduled:  {_when(campaign.scheduled_at)}",
        f"  started:    {_when(campaign.started_at)}",
        f"  finished:   {_when(campaign.finished_at)}",
        f"  progress:   {counts.done}/{total} done: {describe(counts)}",
        f"  opt-outs:   {unsubscribes} unsubscribed through this campaign's links",
        *feedback_lines(counts, later),
    ]
    if campaign.snapshot_at is None:
        lines.append(f"  audience:   {total} (the list's mailable members now)")
    if counts.queued or counts.sending:
        lines.append(f"  waiting:    {counts.queued} queued, {counts.sending} in flight")
    if next_retry:
        lines.append(f"  next retry: {_when(next_retry)}")
    if campaign.lease_owner:
        lines.append(
            f"  sender:     {campaign.lease_owner} (lease to {_when(campaign.lease_expires_at)})"
        )
    if campaign.retry_at:
        lines.append(
            f"  retry:      {_when(campaign.retry_at)} (paused by the relay; a running worker "
            "tries again then)"
        )
    if campaign.last_error:
        lines.append(f"  note:       {campaign.last_error}")
    common.console.print("\n".join(lines), markup=False)


def feedback_lines(counts: DeliveryCounts, later: FeedbackCounts) -> list[str]:
    """What came back after sending (bounces mailed back, complaints), with the rates
    receivers judge a sender by and a warning above their limits."""
    from mailer.feedback.policy import rates

    found = rates(sent=counts.sent, bounced_at_relay=counts.bounced, later=later)
    lines = [
        f"  bounces:    {counts.bounced} refused by the relay, {later.bounced} bounced after "
        f"acceptance, {later.soft_bounced} soft; bounce rate {found.bounce:.1%}",
        f"  complaints: {later.complained} (marked as spam); complaint rate {found.complaint:.2%}",
    ]
    lines.extend(f"  WARNING:    {warning}" for warning in found.warnings())
    return lines


def _later(outcome: LaterOutcome | None) -> str:
    return {
        None: "",
        LaterOutcome.BOUNCED: "bounced after acceptance",
        LaterOutcome.SOFT_BOUNCED: "soft bounce after acceptance",
        LaterOutcome.COMPLAINED: "complained",
    }[outcome]


def report(
    ctx: typer.Context,
    campaign_id: CampaignId,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="Every recipient's outcome as CSV.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", metavar="FILE", help="Write the CSV here.")
    ] = None,
) -> None:
    """The outcome per recipient (CSV), or a summary with the failures."""
    from mailer.campaigns.lifecycle import audience
    from mailer.campaigns.report_csv import write_report
    from mailer.cli.progress import describe
    from mailer.message.headline import campaign_subject

    with common.open_store(common.settings_from(ctx), existing=True) as store:
        campaign = store.get_campaign(campaign_id)
        rows = store.iter_report(campaign_id)
        relays = store.relay_counts(campaign_id)  # empty unless sent through MAILER_RELAYS
        if as_csv or out:
            handle = out.open("w", encoding="utf-8", newline="") if out else sys.stdout
            try:
                write_report(rows, handle, relays=bool(relays))
            finally:
                if out:
                    handle.close()
            return
        counts = store.delivery_counts(campaign_id)
        later = store.feedback_counts(campaign_id)
        # Not started: nothing is in the ledger yet; say whom it is for, not "of 0".
        total = counts.total if campaign.snapshot_at is not None else audience(store, campaign)
        common.console.print(
            f"Campaign {campaign.id} ({campaign_subject(campaign)}), {campaign.status.value}: "
            f"{describe(counts)} of {total}; "
            f"{store.campaign_unsubscribes(campaign_id)} unsubscribed through its links.",
            markup=False,
        )
        if campaign.last_error:  # why it is paused (or what its last run said), as `show`
            common.console.print(f"Note: {campaign.last_error}", markup=False)
        if relays:
            common.console.print("\n".join(relay_lines(relays)), markup=False)
        common.console.print("\n".join(feedback_lines(counts, later)), markup=False)
        common.console.print("\n".join(rsvp_lines(store, campaign)), markup=False)
        problems = [
            r
            for r in rows
            if r.status.value in ("bounced", "failed", "unknown", "deferred") or r.later is not None
        ]
    if problems:
        table = Table("email", "status", "later", "code", "reply", title="Not delivered")
        for column in table.columns[:3]:  # the reply gives way; these are never cut
            column.no_wrap = True
        for row in problems[:200]:
            table.add_row(
                Text(row.email),
                row.status.value,
                _later(row.later),
                str(row.code or ""),
                Text(row.reply),
            )
        common.console.print(table)
        policy = [r for r in problems if r.reply.lstrip().startswith("5.7.")]
        if policy:
            common.console.print(
                f"[bold red]{len(policy)} policy rejection(s) (5.7.x)[/bold red]: the relay or "
                "receivers refused the content or the sender (SPF/DKIM/DMARC?). These "
                "addresses are not suppressed."
            )


def relay_lines(relays: dict[str, dict[DeliveryStatus, int]]) -> list[str]:
    """With MAILER_RELAYS: what each relay took (`relay-a: 750 sent, 2 deferred`)."""
    lines = []
    for name, by_status in relays.items():
        parts = ", ".join(
            f"{count} {status.value}"
            for status in DeliveryStatus
            if (count := by_status.get(status, 0))
        )
        lines.append(f"  Relay {name}: {parts}")
    return lines


def rsvp_lines(store: Store, campaign: CampaignRecord) -> list[str]:
    """The event's RSVP figures among the campaign's list, as `mailer rsvps --list` gives
    them; nothing when the event takes no answers (or its file cannot be read now)."""
    from mailer.campaigns.rsvp import campaign_answers
    from mailer.cli.rsvps_cmd import describe

    answers = campaign_answers(store, campaign)
    if answers is None:
        return []
    event, counts = answers
    return describe(event, counts, list_name=campaign.list_name)


def resume(
    ctx: typer.Context,
    campaign_id: CampaignId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    resend_unknown: Annotated[
        bool, typer.Option("--resend-unknown", help="Resend unknown outcomes (same Message-ID).")
    ] = False,
    processes: SenderProcesses = None,
) -> None:
    """Go on with a paused, missed or waiting campaign; a paused scheduled one goes back to
    its time (`send-now` sends it at once)."""
    from mailer.campaigns import lifecycle
    from mailer.cli.send_cmd import exit_for, print_result, run_with_signals

    settings = common.settings_from(ctx)
    with common.open_store(settings, existing=True) as store:
        plan = lifecycle.plan_resume(store, campaign_id, resend_unknown=resend_unknown)
        campaign = plan.campaign
        if plan.kind is lifecycle.ResumeKind.BACK_TO_SCHEDULE:
            when = campaign.scheduled_at
            common.confirm(
                f"Put campaign {campaign_id} back on its schedule ({_when(when)}, "
                f"{plan.to_send} subscriber(s))?",
                yes=yes,
            )
            lifecycle.back_to_schedule(store, plan)
            common.console.print(
                f"Campaign {campaign_id} is scheduled again for {_when(when)}; a running "
                f"`mailer worker` or `mailer serve` sends it then. "
                f"`mailer campaign send-now {campaign_id}` sends it at once.",
                markup=False,
            )
            return
        common.confirm(f"Resume campaign {campaign_id} ({plan.to_send} to send)?", yes=yes)
        result = run_with_signals(
            store,
            settings,
            campaign_id,
            resend_unknown=resend_unknown,
            total=lifecycle.audience(store, campaign),
            resume=True,
            processes=processes,
            to_send=plan.to_send,
        )
    print_result(result)
    exit_for(result)


def send_now(
    ctx: typer.Context,
    campaign_id: CampaignId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    processes: SenderProcesses = None,
) -> None:
    """Send a scheduled (or missed) campaign now, before its time."""
    from mailer.campaigns import lifecycle
    from mailer.cli.send_cmd import exit_for, print_result, run_with_signals
    from mailer.message.headline import campaign_subject

    settings = common.settings_from(ctx)
    with common.open_store(settings, existing=True) as store:
        plan = lifecycle.plan_send_now(store, campaign_id)
        common.confirm(
            f"Send campaign {campaign_id} ('{campaign_subject(plan.campaign)}') now to "
            f"{plan.to_send} subscriber(s) of '{plan.campaign.list_name}' instead of "
            f"{_when(plan.campaign.scheduled_at)}?",
            yes=yes,
        )
        result = run_with_signals(
            store,
            settings,
            campaign_id,
            total=plan.to_send,
            resume=True,
            early=True,
            processes=processes,
        )
    print_result(result)
    exit_for(result)


def pause(ctx: typer.Context, campaign_id: CampaignId) -> None:
    """Stop a campaign from being sent until `resume`; a running sender stops at once."""
    from mailer.campaigns import lifecycle

    with common.open_store(common.settings_from(ctx), existing=True) as store:
        lifecycle.pause(store, campaign_id)
    common.console.print(f"Campaign {campaign_id} paused. `mailer campaign resume {campaign_id}`.")


def cancel(
    ctx: typer.Context,
    campaign_id: CampaignId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Cancel a campaign for good; nothing more of it is sent."""
    from mailer.campaigns import lifecycle
    from mailer.message.headline import campaign_subject

    with common.open_store(common.settings_from(ctx), existing=True) as store:
        campaign = store.get_campaign(campaign_id)
        lifecycle.check(campaign, lifecycle.Action.CANCEL)
        common.confirm(
            f"Cancel campaign {campaign_id} ('{campaign_subject(campaign)}' to "
            f"'{campaign.list_name}') for good?",
            yes=yes,
        )
        lifecycle.cancel(store, campaign_id)
        reminder = lifecycle.reminder_left_by(store, campaign)
    common.console.print(f"Campaign {campaign_id} cancelled.")
    if reminder is not None and reminder.scheduled_at is not None:
        common.console.print(
            f"Its reminder, campaign {reminder.id}, is still scheduled for "
            f"{reminder.scheduled_at:%Y-%m-%d %H:%M} UTC, to those who answered yes or maybe: "
            f"`mailer campaign cancel {reminder.id}` cancels it too.",
            markup=False,
        )
