"""A campaign's life in one place: which organiser action may move it from which status.

The CLI, the web pages and the worker all go through these functions; none of them calls
the store's status setters. Campaigns are created here only (`start_send`, `schedule`).

    action       from                                         to
    pause        scheduled, sending, paused by the relay       paused (no automatic retry)
    cancel       scheduled, sending, paused, missed           cancelled
    reschedule   scheduled, missed, paused (never started)    scheduled at the new time
    resume       paused (never started, with a time)          scheduled, back to its time
                 paused, missed, sending (idle)               sending, now
                 finished (to resend unknown outcomes only)   sending, now
    send-now     scheduled, missed, paused (never started)    sending, now

Follow-ups (issue 14): a reminder or an update of an event, to those of the list whose
RSVP answers are chosen (`--only yes,maybe`), is a campaign of its own, identified by its
event, list, message and answers, so it is never mistaken for the invitation (which it
neither resumes nor counts as "already sent"). A reminder is never sent to anyone twice
(its snapshot leaves out whoever already had one). An invitation whose event says
`reminder: 1 day before` schedules that reminder, to yes and maybe, when it is created.

A running sender notices pause and cancel at its next status check and stops taking rows;
the messages already with the relay finish and are recorded.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mailer.clock import utcnow
from mailer.errors import CampaignError, MailerError
from mailer.message.event import Event, load_event
from mailer.models import (
    AudienceFilter,
    CampaignRecord,
    CampaignStatus,
    DeliveryCounts,
    FollowUpAudience,
    MessageKind,
)
from mailer.store import Store
from mailer.store.ledger import SameEvent

S = CampaignStatus


class Action(enum.StrEnum):
    PAUSE = "pause"
    CANCEL = "cancel"
    RESCHEDULE = "reschedule"
    RESUME = "resume"
    SEND_NOW = "send-now"


ALLOWED: Mapping[Action, frozenset[CampaignStatus]] = {
    Action.PAUSE: frozenset({S.SCHEDULED, S.SENDING, S.PAUSED}),
    Action.CANCEL: frozenset({S.SCHEDULED, S.SENDING, S.PAUSED, S.MISSED}),
    Action.RESCHEDULE: frozenset({S.SCHEDULED, S.MISSED, S.PAUSED}),
    Action.RESUME: frozenset({S.PAUSED, S.MISSED, S.SENDING, S.FINISHED}),
    Action.SEND_NOW: frozenset({S.SCHEDULED, S.MISSED, S.PAUSED}),
}
"""Statuses each action may start from; `check` adds the finer rules of the table above."""

# A new campaign is leased to its creator for this long: time enough to reach its claim.
_CREATION_LEASE = timedelta(seconds=60)


def never_started(campaign: CampaignRecord) -> bool:
    """Scheduled (or paused before its time) and no recipient was ever taken."""
    return campaign.started_at is None and campaign.snapshot_at is None


def check(campaign: CampaignRecord, action: Action, *, unknown: int = 0) -> None:
    """Raise CampaignError, saying what can be done instead, unless `action` is allowed."""
    status = campaign.status
    allowed = status in ALLOWED[action]
    if action in (Action.RESCHEDULE, Action.SEND_NOW) and status is S.PAUSED:
        allowed = never_started(campaign)
    if action is Action.RESUME and status is S.FINISHED:
        allowed = unknown > 0
    if action is Action.PAUSE and status is S.PAUSED:
        allowed = campaign.retry_at is not None  # the relay's pause becomes a person's
    if allowed:
        return
    hints = {
        Action.RESCHEDULE: "Only a campaign that has not started yet can move to another time.",
        Action.SEND_NOW: "Only a scheduled campaign that has not started can be sent early; "
        f"`mailer campaign resume {campaign.id}` goes on with a started one.",
        Action.RESUME: "A finished campaign goes on only to resend unknown outcomes "
        "(--resend-unknown); there are none."
        if status is S.FINISHED
        else None,
    }
    raise CampaignError(
        f"campaign {campaign.id} is {status.value}; cannot {action.value} it",
        campaign_id=campaign.id,
        hint=hints.get(action),
    )


def _move(
    store: Store,
    campaign_id: int,
    action: Action,
    to: CampaignStatus,
    *,
    scheduled_at: datetime | None = None,
) -> CampaignRecord:
    campaign = store.get_campaign(campaign_id)
    check(campaign, action)
    # The UPDATE repeats the condition, so a change made meanwhile by a sender or another
    # organiser is never overwritten.
    moved = store.set_campaign_status(
        campaign_id, to, only_from=[campaign.status], scheduled_at=scheduled_at
    )
    if not moved:
        now = store.get_campaign(campaign_id)
        raise CampaignError(
            f"campaign {campaign_id} changed meanwhile (now {now.status.value}); try again",
            campaign_id=campaign_id,
        )
    return store.get_campaign(campaign_id)


def pause(store: Store, campaign_id: int) -> CampaignRecord:
    return _move(store, campaign_id, Action.PAUSE, S.PAUSED)


def cancel(store: Store, campaign_id: int) -> CampaignRecord:
    return _move(store, campaign_id, Action.CANCEL, S.CANCELLED)


def reschedule(store: Store, campaign_id: int, when: datetime) -> CampaignRecord:
    return _move(store, campaign_id, Action.RESCHEDULE, S.SCHEDULED, scheduled_at=when)


class ResumeKind(enum.Enum):
    BACK_TO_SCHEDULE = "back to schedule"
    SEND_NOW = "send now"


@dataclass(frozen=True, slots=True)
class ResumePlan:
    kind: ResumeKind
    campaign: CampaignRecord
    to_send: int
    """Recipients the run would take now: queued, deferred, left in flight, and unknown
    ones when they are to be resent; for a campaign not yet started, the list's mailable
    count."""


def plan_resume(store: Store, campaign_id: int, *, resend_unknown: bool = False) -> ResumePlan:
    """What `resume` would do. A paused campaign that never started goes back to its
    time (sending it now is `send-now`); anything else is sent now by the caller."""
    campaign = store.get_campaign(campaign_id)
    counts = store.delivery_counts(campaign_id)
    check(campaign, Action.RESUME, unknown=counts.unknown if resend_unknown else 0)
    if (
        campaign.status is S.PAUSED
        and never_started(campaign)
        and campaign.scheduled_at is not None
    ):
        return ResumePlan(ResumeKind.BACK_TO_SCHEDULE, campaign, audience(store, campaign))
    return ResumePlan(
        ResumeKind.SEND_NOW,
        campaign,
        remaining(campaign, counts, store=store, resend_unknown=resend_unknown),
    )


def back_to_schedule(store: Store, plan: ResumePlan) -> CampaignRecord:
    return _move(store, plan.campaign.id, Action.RESUME, S.SCHEDULED)


# The dashboard's resume and send-now leave the campaign for the worker running beside
# the web app (`mailer serve`), which takes it at its next poll; the CLI sends it in its
# own process instead. Same rules (`check`), same table.


def send_now_by_worker(store: Store, plan: ResumePlan, *, now: datetime) -> CampaignRecord:
    """Send-now: back to `scheduled` at `now`, so the worker's claim takes it as due."""
    return _move(store, plan.campaign.id, Action.SEND_NOW, S.SCHEDULED, scheduled_at=now)


def resume_by_worker(store: Store, plan: ResumePlan) -> CampaignRecord:
    """Resume: a campaign paused before its time goes back to it; any other to `sending`."""
    if plan.kind is ResumeKind.BACK_TO_SCHEDULE:
        return back_to_schedule(store, plan)
    return _move(store, plan.campaign.id, Action.RESUME, S.SENDING)


def plan_send_now(store: Store, campaign_id: int) -> ResumePlan:
    campaign = store.get_campaign(campaign_id)
    check(campaign, Action.SEND_NOW)
    return ResumePlan(ResumeKind.SEND_NOW, campaign, audience(store, campaign))


def remaining(
    campaign: CampaignRecord, counts: DeliveryCounts, *, store: Store, resend_unknown: bool
) -> int:
    if campaign.snapshot_at is None:
        return _mailable_now(store, campaign)
    extra = counts.unknown if resend_unknown else 0
    return counts.queued + counts.deferred + counts.sending + extra


def audience(store: Store, campaign: CampaignRecord) -> int:
    """Everyone the campaign is for: the frozen ledger once it started, else whom the
    list would give it now (its mailable members)."""
    if campaign.snapshot_at is not None:
        return store.delivery_counts(campaign.id).total
    return _mailable_now(store, campaign)


def _mailable_now(store: Store, campaign: CampaignRecord) -> int:
    """Whom its snapshot would take now: an invitation without --new leaves out those
    who had its event's invitation through another campaign."""
    plain = campaign.message is MessageKind.INVITATION and campaign.audience_filter is None
    left_out = plain and not campaign.mail_again
    event = SameEvent(campaign.event_slug, campaign.event_key)
    return store.count_mailable(campaign.list_id, not_invited_to=event if left_out else None)


# -- starting a send ------------------------------------------------------------------


class SendKind(enum.Enum):
    NEW = "new"
    RESUME = "resume"


@dataclass(frozen=True, slots=True)
class SendPlan:
    """What `mailer send EVENT --list NAME` would do, decided before anything is written."""

    kind: SendKind
    list_name: str
    list_id: int
    audience: int
    existing: CampaignRecord | None
    """The unfinished campaign that will be resumed (RESUME)."""
    earlier: CampaignRecord | None
    """With --new: the last campaign of this event that reached this list."""
    earlier_sent: int
    message: MessageKind = MessageKind.INVITATION
    only: frozenset[AudienceFilter] | None = None
    """A follow-up's audience by RSVP answer; None: the whole list."""
    newest: int | None = None
    """The newest campaign of this event to this list when planned: a new one is created
    only if it still is (another command may have started one meanwhile)."""
    mail_again: bool = False
    """--new: to everyone on the list, those who had this invitation elsewhere too."""
    already_invited: int = 0
    """Members left out (not in `audience`): they had this event's invitation through
    another campaign (another list); --new mails them too."""


REMINDER_AUDIENCE = frozenset({AudienceFilter.YES, AudienceFilter.MAYBE})
"""Whom `reminder: N days before` (and `--message reminder` without --only) reminds."""


def plan_send(
    store: Store,
    *,
    event: Event,
    list_name: str,
    new: bool,
    message: MessageKind = MessageKind.INVITATION,
    only: frozenset[AudienceFilter] | None = None,
) -> SendPlan:
    """Resume the unfinished campaign of this event to this list; refuse to mail the list
    a second time unless `new` (the organiser said so, after being told of the first).

    `message` and `only`: a follow-up (see the module docstring); a reminder is never
    refused as "already sent": whoever had it is left out of its audience instead."""
    list_id = store.list_id(list_name)
    if only is None and message is MessageKind.REMINDER:
        only = REMINDER_AUDIENCE
    # Read before any check: a campaign another command makes after this read is seen
    # when this plan's campaign is created (create_campaign's check_newest), whatever
    # the checks below found.
    newest = store.newest_campaign_id(event.slug, list_id, message=message, only=only)
    if only is not None and not event.rsvp_enabled:
        raise CampaignError(
            "--only chooses people by their RSVP answers, and this event takes none",
            hint="Add `rsvp: true` (or a capacity) to the front matter to make the "
            "invitation answerable.",
        )
    earlier, earlier_sent = _earlier_send(store, event, list_id, message=message, only=only)
    if message is MessageKind.REMINDER:
        earlier, earlier_sent = None, 0
    if not new:
        existing = store.find_unfinished_campaign(event.slug, list_id, message=message, only=only)
        if existing is not None:
            _refuse_if_waiting_for_its_time(existing, list_name)
            counts = store.delivery_counts(existing.id)
            return SendPlan(
                SendKind.RESUME,
                list_name,
                list_id,
                remaining(existing, counts, store=store, resend_unknown=False),
                existing,
                None,
                0,
                message,
                only,
            )
        _refuse_if_already_sent(earlier, earlier_sent, list_name)
        if message is MessageKind.INVITATION and only is None:
            _refuse_if_sent_from_another_file(store, event, list_id, list_name)
    already_invited = 0
    if message is MessageKind.INVITATION and only is None:
        audience_now, already_invited = _invitation_audience(store, event, list_id, new=new)
    else:
        audience_now = store.count_follow_up(list_id, FollowUpAudience(event.slug, message, only))
    return SendPlan(
        SendKind.NEW,
        list_name,
        list_id,
        audience_now,
        None,
        earlier,
        earlier_sent,
        message,
        only,
        newest=newest,
        mail_again=new,
        already_invited=already_invited,
    )


def already_invited_note(count: int) -> str:
    """What the organiser is told about the members a new invitation leaves out."""
    return (
        f"{count} of them already had this event's invitation (through another list): "
        "they are left out. --new mails them too."
    )


def _invitation_audience(store: Store, event: Event, list_id: int, *, new: bool) -> tuple[int, int]:
    """(whom a new invitation reaches, whom it leaves out: they had this event's
    invitation through another campaign). With `new`, everyone mailable."""
    everyone = store.count_mailable(list_id)
    if new:
        return everyone, 0
    same = SameEvent(event.slug, event.identity)
    audience = store.count_mailable(list_id, not_invited_to=same)
    return audience, everyone - audience


def _earlier_send(
    store: Store,
    event: Event,
    list_id: int,
    *,
    message: MessageKind = MessageKind.INVITATION,
    only: frozenset[AudienceFilter] | None = None,
) -> tuple[CampaignRecord | None, int]:
    """The last campaign of this event (sending the same message to the same answers)
    that reached this list (finished, cancelled, or still unfinished), and how many it
    reached (sent, or probably sent: unknown)."""
    candidates = [
        c
        for c in (
            store.last_sent_campaign(event.slug, list_id, message=message, only=only),
            store.find_unfinished_campaign(event.slug, list_id, message=message, only=only),
        )
        if c is not None
    ]
    best: tuple[CampaignRecord | None, int] = (None, 0)
    for campaign in sorted(candidates, key=lambda c: c.id):
        counts = store.delivery_counts(campaign.id)
        if counts.sent + counts.unknown:
            best = (campaign, counts.sent + counts.unknown)
    return best


def waiting_for_its_time(campaign: CampaignRecord) -> bool:
    """Scheduled, or paused before its time: it goes at its time."""
    return campaign.status is S.SCHEDULED or (
        campaign.status is S.PAUSED
        and never_started(campaign)
        and campaign.scheduled_at is not None
    )


def _refuse_if_waiting_for_its_time(existing: CampaignRecord, list_name: str) -> None:
    """A scheduled campaign, or one paused before its time, goes at its time: sending it
    now is `campaign send-now`, which says so and asks."""
    if waiting_for_its_time(existing):
        raise CampaignError(
            f"campaign {existing.id} of this event to {list_name!r} is {existing.status.value},"
            f" scheduled for {existing.scheduled_at:%Y-%m-%d %H:%M} UTC",
            campaign_id=existing.id,
            hint=f"`mailer campaign send-now {existing.id}` sends it now; "
            f"`mailer campaign cancel {existing.id}` drops it; --new sends another.",
        )


def _refuse_if_already_sent(earlier: CampaignRecord | None, reached: int, list_name: str) -> None:
    if earlier is None:
        return
    when = earlier.finished_at or earlier.started_at or earlier.created_at
    raise CampaignError(
        f"this event already went to {list_name!r}: campaign {earlier.id} "
        f"({earlier.status.value} {when:%Y-%m-%d %H:%M} UTC) reached {reached} "
        "subscriber(s); nothing was sent",
        campaign_id=earlier.id,
        hint=f"`mailer campaign report {earlier.id}` shows who got it; pass --new to "
        "send the event to the whole list again.",
    )


def _refuse_if_sent_from_another_file(
    store: Store, event: Event, list_id: int, list_name: str
) -> None:
    """An event is known by its file's name; a copy of the file under another name (or
    the file renamed) was a new event, and the whole list got it again (a new organiser:
    three copies of one invitation). An invitation that reached this list from another
    file whose event has the same title and start is taken for the same event. Files
    that are gone or no longer load are passed over."""
    for campaign in store.invitations_that_reached(list_id):
        if campaign.event_slug == event.slug:
            continue
        try:
            other = load_event(Path(campaign.event_path))
        except (MailerError, OSError):
            continue
        if (other.title, other.starts_at) != (event.title, event.starts_at):
            continue
        raise CampaignError(
            f"this event already went to {list_name!r} from another file: campaign "
            f"{campaign.id} ({campaign.event_path}) has the same title and start and "
            "reached its subscribers; nothing was sent",
            campaign_id=campaign.id,
            hint=f"`mailer campaign report {campaign.id}` shows who got it; pass --new to "
            "send this file to the whole list anyway.",
        )


def start_send(
    store: Store, plan: SendPlan, *, event: Event, event_path: Path, owner: str | None
) -> CampaignRecord:
    """The campaign to run: the one being resumed, or a new one leased to `owner` at once
    so a running worker cannot take it before the creator's own claim."""
    if plan.existing is not None:
        return plan.existing
    campaign = _create(
        store,
        event,
        event_path,
        plan.list_id,
        status=S.SENDING,
        owner=owner,
        message=plan.message,
        only=plan.only,
        planned=plan,
    )
    if plan.message is MessageKind.INVITATION and plan.only is None:
        schedule_reminder(store, event, event_path, plan.list_id, after=utcnow())
    return campaign


def plan_schedule(store: Store, *, event: Event, list_name: str, new: bool) -> SendPlan:
    """The same guard as `plan_send`: an event already sent to the list, or with a
    campaign to it still unfinished (scheduled, paused, sending), is not scheduled again
    unless `new`."""
    list_id = store.list_id(list_name)
    newest = store.newest_campaign_id(event.slug, list_id)
    earlier, earlier_sent = _earlier_send(store, event, list_id)
    if not new:
        existing = store.find_unfinished_campaign(event.slug, list_id)
        if existing is not None:
            raise CampaignError(
                f"campaign {existing.id} of this event to {list_name!r} is "
                f"{existing.status.value}; nothing was scheduled",
                campaign_id=existing.id,
                hint=f"`mailer campaign reschedule {existing.id} --at ...` moves it; "
                "--new schedules another.",
            )
        _refuse_if_already_sent(earlier, earlier_sent, list_name)
        _refuse_if_sent_from_another_file(store, event, list_id, list_name)
    audience, already_invited = _invitation_audience(store, event, list_id, new=new)
    return SendPlan(
        SendKind.NEW,
        list_name,
        list_id,
        audience,
        None,
        earlier,
        earlier_sent,
        newest=newest,
        mail_again=new,
        already_invited=already_invited,
    )


def schedule(
    store: Store, plan: SendPlan, *, event: Event, event_path: Path, when: datetime
) -> CampaignRecord:
    campaign = _create(
        store,
        event,
        event_path,
        plan.list_id,
        status=S.SCHEDULED,
        scheduled_at=when,
        planned=plan,
    )
    schedule_reminder(store, event, event_path, plan.list_id, after=when)
    return campaign


def schedule_reminder(
    store: Store, event: Event, event_path: Path, list_id: int, *, after: datetime
) -> CampaignRecord | None:
    """The event's `reminder: N days before`, to those who answered yes or maybe, as a
    scheduled campaign (a worker sends it at its time, from the file as it reads then).
    None when the event has no reminder, its time is not after `after` (the invitation's
    own time), or a reminder to this list is already waiting to go."""
    when = event.reminder_at
    if when is None or when <= after:
        return None
    waiting = store.find_unfinished_campaign(
        event.slug, list_id, message=MessageKind.REMINDER, only=REMINDER_AUDIENCE
    )
    if waiting is not None:
        return None
    return _create(
        store,
        event,
        event_path,
        list_id,
        status=S.SCHEDULED,
        scheduled_at=when.astimezone(UTC),
        message=MessageKind.REMINDER,
        only=REMINDER_AUDIENCE,
    )


def reminder_left_by(store: Store, campaign: CampaignRecord) -> CampaignRecord | None:
    """The scheduled reminder of an invitation's event to its list, which cancelling the
    invitation leaves in place (the reminder goes to those who answered yes or maybe,
    whoever invited them): the organiser is told, and cancels it too if they mean to."""
    if campaign.message is not MessageKind.INVITATION:
        return None
    found = store.find_unfinished_campaign(
        campaign.event_slug, campaign.list_id, message=MessageKind.REMINDER, only=REMINDER_AUDIENCE
    )
    return found if found is not None and found.status is S.SCHEDULED else None


def pending_reminder(store: Store, event: Event, list_id: int) -> CampaignRecord | None:
    """The scheduled reminder of this event to this list, if one waits (for the CLI)."""
    found = store.find_unfinished_campaign(
        event.slug, list_id, message=MessageKind.REMINDER, only=REMINDER_AUDIENCE
    )
    return found if found is not None and found.status is S.SCHEDULED else None


def _create(
    store: Store,
    event: Event,
    event_path: Path,
    list_id: int,
    *,
    status: CampaignStatus,
    scheduled_at: datetime | None = None,
    owner: str | None = None,
    message: MessageKind = MessageKind.INVITATION,
    only: frozenset[AudienceFilter] | None = None,
    planned: SendPlan | None = None,
) -> CampaignRecord:
    """`planned`: what the organiser was shown; if another campaign of this event to
    this list was made since, nothing is created (CampaignError)."""
    campaign_id = store.create_campaign(
        event_path=str(event_path.resolve()),
        event_slug=event.slug,
        list_id=list_id,
        subject=event.for_message(message).subject,
        message=message,
        only=only,
        status=status,
        scheduled_at=scheduled_at,
        lease_owner=owner,
        lease=_CREATION_LEASE if owner else None,
        newest=planned.newest if planned is not None else None,
        check_newest=planned is not None,
        mail_again=planned.mail_again if planned is not None else False,
        event_key=event.identity,
    )
    return store.get_campaign(campaign_id)


@dataclass(frozen=True, slots=True)
class CampaignChoice:
    campaign: CampaignRecord
    resumed: bool


def start_or_resume(
    store: Store,
    *,
    event_path: Path,
    event: Event,
    list_name: str,
    new: bool = False,
    owner: str | None = None,
) -> CampaignChoice:
    """`plan_send` then `start_send`, for callers that need not confirm in between."""
    plan = plan_send(store, event=event, list_name=list_name, new=new)
    campaign = start_send(store, plan, event=event, event_path=event_path, owner=owner)
    return CampaignChoice(campaign, resumed=plan.kind is SendKind.RESUME)
