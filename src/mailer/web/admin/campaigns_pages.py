"""Campaigns: the list, a new campaign (checked and confirmed as the CLI does), one
campaign with its live progress, and the actions (pause, resume, send now, cancel,
reschedule): each through campaigns.lifecycle, the functions the CLI calls.

GET /admin/campaigns/new with an event and a list shows the proposal (what `mailer send`
shows before its question) and changes nothing; its button POSTs the same fields, which
are checked again before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from zoneinfo import available_timezones

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mailer.campaigns import lifecycle
from mailer.campaigns.preview import event_files
from mailer.campaigns.proposal import Proposal, When, changed_since, create, propose
from mailer.campaigns.when import describe_time, parse_send_time
from mailer.errors import CampaignError, InputError, MailerError
from mailer.models import CampaignRecord, CampaignStatus, DeliveryCounts
from mailer.store.admin import AdminRole
from mailer.web.admin.context import Admin
from mailer.web.admin.guard import Handler, SignedIn, guard

ACTIONS: tuple[tuple[lifecycle.Action, str], ...] = (
    (lifecycle.Action.SEND_NOW, "Send now"),
    (lifecycle.Action.RESUME, "Resume"),
    (lifecycle.Action.PAUSE, "Pause"),
    (lifecycle.Action.CANCEL, "Cancel"),
)
# Asked first, as the CLI asks (README's table): one click must not mail a list a month
# early or end a campaign for good. The button opens a page saying what will happen; only
# its form, with `confirm` set to the action, does it.
ASKS_FIRST = frozenset({lifecycle.Action.SEND_NOW, lifecycle.Action.CANCEL})
LIVE = frozenset({CampaignStatus.SENDING, CampaignStatus.SCHEDULED})
ZONES = sorted(available_timezones())


@dataclass(frozen=True, slots=True)
class Progress:
    """What the live progress shows; also its JSON."""

    campaign: CampaignRecord
    counts: DeliveryCounts
    total: int

    @property
    def percent(self) -> int:
        return int(100 * self.counts.done / self.total) if self.total else 0

    def as_json(self) -> dict[str, object]:
        counts = self.counts
        return {
            "id": self.campaign.id,
            "status": self.campaign.status.value,
            "done": counts.done,
            "total": self.total,
            "percent": self.percent,
            "sent": counts.sent,
            "deferred": counts.deferred,
            "bounced": counts.bounced,
            "failed": counts.failed,
            "unknown": counts.unknown,
            "waiting": counts.queued + counts.sending,
        }


def progress_of(admin: Admin, campaign: CampaignRecord) -> Progress:
    counts = admin.store.delivery_counts(campaign.id)
    total = counts.total if campaign.snapshot_at else lifecycle.audience(admin.store, campaign)
    return Progress(campaign, counts, total)


def possible_actions(admin: Admin, campaign: CampaignRecord) -> list[tuple[str, str]]:
    """(action, label) the lifecycle allows now: the same `check` the CLI runs."""
    found = []
    for action, label in ACTIONS:
        try:
            lifecycle.check(campaign, action)
        except MailerError:
            continue
        found.append((action.value, label))
    return found


def may_reschedule(campaign: CampaignRecord) -> bool:
    try:
        lifecycle.check(campaign, lifecycle.Action.RESCHEDULE)
    except MailerError:
        return False
    return True


def plain_words(error: MailerError) -> MailerError:
    """The CLI names its options (--at, --tz) in time errors, and --new and its commands
    in a refusal to mail a list again; the form has fields and a checkbox."""
    text = str(error)
    for option, field in (("--at: ", "Send time: "), ("--tz: ", "Time zone: ")):
        if text.startswith(option):
            return InputError(field + text[len(option) :], hint=error.hint)
    if error.hint is not None and "--new" in error.hint and isinstance(error, CampaignError):
        report = (
            f"Campaign {error.campaign_id}'s report shows who got it. "
            if error.campaign_id is not None
            else ""
        )
        return CampaignError(
            text,
            campaign_id=error.campaign_id,
            hint=f"{report}Tick “Send again even if this event already went to this "
            "list” to send it to the whole list anyway.",
        )
    return error


def routes(admin: Admin) -> list[Route]:
    store = admin.store

    def campaign_or_404(request: Request) -> CampaignRecord:
        return store.get_campaign(int(request.path_params["campaign_id"]))

    def event_path_named(name: str) -> Path | None:
        """Only a file of the events folder, by its name: never a path from the form."""
        for path in event_files(admin.settings.templates_dir):
            if path.name == name:
                return path
        return None

    # -- the list ---------------------------------------------------------------------

    def campaign_list(_request: Request, signed_in: SignedIn) -> Response:
        rows = []
        for campaign in reversed(store.campaigns()):
            rows.append((campaign, store.delivery_counts(campaign.id)))
        return admin.page(
            signed_in,
            "campaigns.html.j2",
            title="Campaigns",
            section="campaigns",
            rows=rows,
        )

    # -- a new campaign ---------------------------------------------------------------

    def read_proposal(values: dict[str, str]) -> Proposal | MailerError:
        event_name = values.get("event", "")
        path = event_path_named(event_name)
        if path is None:
            return InputError(f"no event file named {event_name!r} in the events folder")
        list_name = values.get("list", "")
        when = When.SCHEDULED if values.get("when") == When.SCHEDULED.value else When.NOW
        send_at: datetime | None = None
        now = admin.now()
        if when is When.SCHEDULED:
            zone = values.get("tz") or admin.settings.timezone
            try:
                send_at = parse_send_time(
                    f"{values.get('date', '')} {values.get('time', '')}", zone, now=now
                )
            except InputError as exc:
                return plain_words(exc)
        return propose(
            store,
            admin.settings,
            event_path=path,
            list_name=list_name,
            when=when,
            send_at=send_at,
            new=values.get("new") == "yes",
            now=now,
        )

    def new_campaign(request: Request, signed_in: SignedIn) -> Response:
        values = {k: v for k, v in request.query_params.items() if isinstance(v, str)}
        proposal: Proposal | None = None
        problem: MailerError | None = None
        if values.get("event") and values.get("list"):
            found = read_proposal(values)
            if isinstance(found, MailerError):
                problem = plain_words(found)
            else:
                proposal = replace(found, errors=[plain_words(e) for e in found.errors])
        local_now = admin.now().astimezone(admin.zone)
        return admin.page(
            signed_in,
            "campaign_new.html.j2",
            title="New campaign",
            section="campaigns",
            events=[p.name for p in event_files(admin.settings.templates_dir)],
            lists=store.list_counts(),
            values=values,
            proposal=proposal,
            problem=problem,
            when_text=describe_time(proposal.send_at, values.get("tz") or admin.settings.timezone)
            if proposal is not None and proposal.send_at is not None
            else None,
            zones=ZONES,
            default_date=local_now.strftime("%Y-%m-%d"),
            default_time=local_now.strftime("%H:%M"),
        )

    def create_campaign(_request: Request, signed_in: SignedIn) -> Response:
        values = {k: v for k, v in signed_in.form.items() if isinstance(v, str)}
        found = read_proposal(values)
        if isinstance(found, MailerError):
            return admin.refusal(
                signed_in, plain_words(found), title="Not created", section="campaigns"
            )
        if not found.ready:
            return admin.refusal(
                signed_in, plain_words(found.errors[0]), title="Not created", section="campaigns"
            )
        changed = changed_since(values.get("seen"), found)
        if changed is not None:
            return admin.refusal(signed_in, changed, title="Not created", section="campaigns")
        try:
            campaign = create(store, found)
        except MailerError as exc:
            return admin.refusal(
                signed_in, plain_words(exc), title="Not created", section="campaigns"
            )
        return admin.redirect(f"/admin/campaigns/{campaign.id}")

    # -- one campaign -----------------------------------------------------------------

    def campaign_page(request: Request, signed_in: SignedIn) -> Response:
        campaign = campaign_or_404(request)
        progress = progress_of(admin, campaign)
        return admin.page(
            signed_in,
            "campaign.html.j2",
            title=f"Campaign {campaign.id}",
            section="campaigns",
            campaign=campaign,
            progress=progress,
            live=campaign.status in LIVE,
            actions=possible_actions(admin, campaign),
            asks_first={action.value for action in ASKS_FIRST},
            may_reschedule=may_reschedule(campaign),
            zones=ZONES,
            next_retry=store.next_retry_at(campaign.id),
        )

    def progress_json(request: Request, _signed_in: SignedIn) -> Response:
        return JSONResponse(progress_of(admin, campaign_or_404(request)).as_json())

    def run_action(campaign_id: int, action: lifecycle.Action, signed_in: SignedIn) -> None:
        if action is lifecycle.Action.PAUSE:
            lifecycle.pause(store, campaign_id)
        elif action is lifecycle.Action.CANCEL:
            lifecycle.cancel(store, campaign_id)
        elif action is lifecycle.Action.RESUME:
            lifecycle.resume_by_worker(store, lifecycle.plan_resume(store, campaign_id))
        elif action is lifecycle.Action.SEND_NOW:
            plan = lifecycle.plan_send_now(store, campaign_id)
            lifecycle.send_now_by_worker(store, plan, now=admin.now())
        else:
            form = signed_in.form
            zone = str(form.get("tz") or admin.settings.timezone)
            when = parse_send_time(
                f"{form.get('date', '')} {form.get('time', '')}", zone, now=admin.now()
            )
            lifecycle.reschedule(store, campaign_id, when)

    def question(action: lifecycle.Action) -> Handler:
        """The page that asks before `action` (ASKS_FIRST); changes nothing."""

        def ask(request: Request, signed_in: SignedIn) -> Response:
            campaign = campaign_or_404(request)
            back = f"/admin/campaigns/{campaign.id}"
            try:
                if action is lifecycle.Action.SEND_NOW:
                    to_send = lifecycle.plan_send_now(store, campaign.id).to_send
                else:
                    lifecycle.check(campaign, action)
                    to_send = None
            except MailerError as exc:
                return admin.refusal(
                    signed_in,
                    plain_words(exc),
                    title="Not possible",
                    section="campaigns",
                    back=back,
                )
            return admin.page(
                signed_in,
                "campaign_confirm.html.j2",
                title=f"Campaign {campaign.id}: {dict(ACTIONS)[action]}?",
                section="campaigns",
                campaign=campaign,
                action=action.value,
                to_send=to_send,
            )

        ask.__name__ = f"confirm_{action.name.lower()}"
        return ask

    def acting(action: lifecycle.Action) -> Handler:
        def act(request: Request, signed_in: SignedIn) -> Response:
            campaign = campaign_or_404(request)
            back = f"/admin/campaigns/{campaign.id}"
            if action in ASKS_FIRST and signed_in.form.get("confirm") != action.value:
                return admin.redirect(f"{back}/{action.value}")  # to the question first
            try:
                run_action(campaign.id, action, signed_in)
            except MailerError as exc:
                return admin.refusal(
                    signed_in, plain_words(exc), title="Not done", section="campaigns", back=back
                )
            return admin.redirect(back)

        act.__name__ = f"campaign_{action.name.lower()}"
        return act

    viewer, organiser = AdminRole.VIEWER, AdminRole.ORGANISER
    one = "/admin/campaigns/{campaign_id:id}"
    return [
        Route("/admin/campaigns", guard(admin, viewer, campaign_list), methods=["GET"]),
        Route("/admin/campaigns/new", guard(admin, organiser, new_campaign), methods=["GET"]),
        Route("/admin/campaigns/new", guard(admin, organiser, create_campaign), methods=["POST"]),
        Route(one, guard(admin, viewer, campaign_page), methods=["GET"]),
        Route(f"{one}/progress", guard(admin, viewer, progress_json), methods=["GET"]),
        *(
            Route(
                f"{one}/{action.value}",
                guard(admin, organiser, acting(action)),
                methods=["POST"],
            )
            for action in lifecycle.Action
        ),
        *(
            Route(
                f"{one}/{action.value}", guard(admin, organiser, question(action)), methods=["GET"]
            )
            for action in sorted(ASKS_FIRST)
        ),
    ]
