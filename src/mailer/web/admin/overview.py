"""The overview, /admin: what is scheduled (in the organiser's zone, with its audience),
what is sending now (live), what went recently (delivered, bounced, failed,
unsubscribed), and the lists with their member counts.

Recent campaigns' figures come from store.report_figures, kept once a campaign is
settled; list counts are index-only counts: the page reads no ledger row by row.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailer.campaigns import lifecycle
from mailer.models import CampaignRecord, CampaignStatus, DeliveryStatus, LaterOutcome
from mailer.store.admin import AdminRole
from mailer.web.admin.campaigns_pages import progress_of
from mailer.web.admin.context import Admin
from mailer.web.admin.guard import SignedIn, guard

RECENT = 8
WAITING = (CampaignStatus.SCHEDULED,)


@dataclass(frozen=True, slots=True)
class Outcome:
    campaign: CampaignRecord
    delivered: int
    bounced: int
    failed: int
    unsubscribed: int
    total: int


def outcome_of(admin: Admin, campaign: CampaignRecord) -> Outcome:
    figures = admin.store.report_figures(campaign.id, campaign.status)
    counts = figures.outcomes
    later = figures.later
    return Outcome(
        campaign=campaign,
        delivered=counts[DeliveryStatus.SENT.value]
        - later[LaterOutcome.BOUNCED.value]
        - later[LaterOutcome.SOFT_BOUNCED.value],
        bounced=counts[DeliveryStatus.BOUNCED.value]
        + later[LaterOutcome.BOUNCED.value]
        + later[LaterOutcome.SOFT_BOUNCED.value],
        failed=counts[DeliveryStatus.FAILED.value] + counts[DeliveryStatus.UNKNOWN.value],
        unsubscribed=figures.unsubscribed,
        total=sum(counts.values()),
    )


def routes(admin: Admin) -> list[Route]:
    def overview(_request: Request, signed_in: SignedIn) -> Response:
        store = admin.store
        everything = store.campaigns()
        scheduled = sorted(
            (c for c in everything if c.status in WAITING),
            key=lambda c: (c.scheduled_at is None, c.scheduled_at, c.id),
        )
        running = [c for c in everything if c.status is CampaignStatus.SENDING]
        recent = [
            c for c in reversed(everything) if c.status not in (*WAITING, CampaignStatus.SENDING)
        ][:RECENT]
        return admin.page(
            signed_in,
            "overview.html.j2",
            title="Overview",
            section="overview",
            scheduled=[(c, lifecycle.audience(store, c)) for c in scheduled],
            running=[progress_of(admin, c) for c in running],
            recent=[outcome_of(admin, c) for c in recent],
            lists=store.list_counts(),
        )

    return [Route("/admin", guard(admin, AdminRole.VIEWER, overview), methods=["GET"])]
