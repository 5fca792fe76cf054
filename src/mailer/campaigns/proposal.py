"""A campaign proposed in the dashboard (an event file and a list, now or at a time),
checked as `mailer send` and `mailer schedule` check it before they ask to confirm:

1. the event file and its templates (`mailer validate --list`): errors stop it, each
   with its file and line; warnings (an event that will have started) are shown;
2. the settings a real send needs (preflight.check_real_send);
3. the lifecycle's own refusals (lifecycle.plan_send / plan_schedule: already sent to
   this list, a campaign of it still unfinished or waiting for its time);
4. what the confirmation shows (campaigns.summary: From, Reply-To, subject, unsubscribe
   base, audience, relay), and the CLI's "too late" sentence.

`create` then makes the campaign through the same lifecycle functions: a send now is a
campaign in `sending` that the worker running beside the web app takes at its next poll
(the CLI sends it in its own process instead); a scheduled one waits for its time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from mailer.campaigns import lifecycle
from mailer.campaigns.preview import list_columns
from mailer.campaigns.summary import SendSummary, summarise_send
from mailer.config import Settings
from mailer.errors import CampaignError, InputError, MailerError
from mailer.message.event import Event
from mailer.message.lint import lint_event, timing_problem
from mailer.models import CampaignRecord
from mailer.preflight import check_real_send
from mailer.store import Store


class When(enum.Enum):
    NOW = "now"
    SCHEDULED = "scheduled"


@dataclass(frozen=True, slots=True)
class Proposal:
    event_path: Path
    list_name: str
    when: When
    send_at: datetime | None
    new: bool
    event: Event | None = None
    plan: lifecycle.SendPlan | None = None
    summary: SendSummary | None = None
    errors: list[MailerError] = field(default_factory=list)
    """What stops it (the first lint errors, a setting, a lifecycle refusal)."""
    warnings: list[MailerError] = field(default_factory=list)
    too_late: str | None = None
    """Why the invitations would come too late (the CLI says it before its question)."""

    @property
    def ready(self) -> bool:
        return not self.errors and self.plan is not None and self.event is not None

    @property
    def seen(self) -> str:
        """What the question showed of this event's campaigns to this list: the newest one's
        id, or "none". The confirmation carries it back; a confirmation whose question saw
        something else is refused (`changed_since`)."""
        newest = self.plan.newest if self.plan is not None else None
        return "none" if newest is None else str(newest)


def changed_since(question_saw: str | None, now: Proposal) -> CampaignError | None:
    """Why a confirmation may not go ahead though `now` is ready: the newest campaign of
    this event to this list is not the one its question showed. Planned afresh at the
    confirmation, "send again" would otherwise mail the list a second time beside a
    campaign started in between (another organiser, a terminal), which nobody saw."""
    if question_saw == now.seen:
        return None
    if question_saw is None:  # not from the question page, or one from before an upgrade
        return CampaignError(
            "this confirmation does not say what its question showed; nothing was started",
            hint="Open New campaign again, check what it shows, then confirm there.",
        )
    if now.plan is not None and now.plan.newest is not None:
        what = f"campaign {now.plan.newest} of this event to {now.list_name!r} was started"
    else:
        what = "this event's campaigns to this list changed"
    return CampaignError(
        f"{what} after this confirmation was shown; nothing new was started",
        campaign_id=now.plan.newest if now.plan is not None else None,
        hint="Look at the campaigns first, then start again from New campaign if you still "
        "want to send.",
    )


def propose(
    store: Store,
    settings: Settings,
    *,
    event_path: Path,
    list_name: str,
    when: When,
    send_at: datetime | None,
    new: bool,
    now: datetime,
) -> Proposal:
    """Everything the CLI checks and shows before asking, without writing anything."""
    base = Proposal(event_path, list_name, when, send_at, new)
    try:
        columns = list_columns(store, list_name)
    except MailerError as exc:  # no such list
        return _with(base, errors=[exc])
    report = lint_event(
        event_path,
        templates_dir=settings.templates_dir,
        columns=columns,
        now=now,
        send_at=send_at,
    )
    if report.errors or report.event is None:
        return _with(base, errors=list(report.errors), warnings=list(report.warnings))
    event = report.event
    warnings: list[MailerError] = list(report.warnings)
    try:
        check_real_send(settings)
        if when is When.NOW:
            plan = lifecycle.plan_send(store, event=event, list_name=list_name, new=new)
            if plan.existing is not None:
                existing = plan.existing
                raise CampaignError(
                    f"campaign {existing.id} of this event to {list_name!r} is "
                    f"{existing.status.value} and not finished; nothing new was started",
                    campaign_id=existing.id,
                    hint="Open it to resume it, or tick 'send again' to start another.",
                )
        else:
            plan = lifecycle.plan_schedule(store, event=event, list_name=list_name, new=new)
    except MailerError as exc:
        return _with(base, event=event, errors=[exc], warnings=warnings)
    summary = summarise_send(
        settings, event, list_name=list_name, audience=plan.audience, store=store
    )
    if plan.already_invited:
        note = lifecycle.already_invited_note(plan.already_invited)
        warnings.append(CampaignError(note.replace("--new", "Ticking 'send again'")))
    if plan.earlier is not None:
        warnings.append(
            CampaignError(
                f"This event already went to '{list_name}': campaign {plan.earlier.id} "
                f"reached {plan.earlier_sent}. Sending again mails them again.",
                campaign_id=plan.earlier.id,
            )
        )
    late = timing_problem(event, now=now, send_at=send_at)
    return _with(
        base,
        event=event,
        plan=plan,
        summary=summary,
        warnings=warnings,
        too_late=f"{late[0].upper()}{late[1:]}." if late else None,
    )


def create(store: Store, proposal: Proposal) -> CampaignRecord:
    """The campaign, through the lifecycle (raises what it refuses)."""
    if not proposal.ready or proposal.plan is None or proposal.event is None:
        raise InputError("this campaign has problems to fix first")
    if proposal.when is When.NOW:
        return lifecycle.start_send(
            store, proposal.plan, event=proposal.event, event_path=proposal.event_path, owner=None
        )
    assert proposal.send_at is not None
    return lifecycle.schedule(
        store,
        proposal.plan,
        event=proposal.event,
        event_path=proposal.event_path,
        when=proposal.send_at,
    )


def _with(base: Proposal, **changes: object) -> Proposal:
    from dataclasses import replace

    return replace(base, **changes)  # type: ignore[arg-type]
