"""A campaign's report: the outcome breakdown, deliveries / unsubscribes / bounces over
time (SVG charts, each with its table), per receiving domain, the recipients not
delivered with their reply codes, and the CSV the CLI writes (`campaign report --csv`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from mailer.campaigns.report_csv import report_chunks
from mailer.campaigns.rsvp import campaign_answers
from mailer.models import DeliveryStatus, LaterOutcome
from mailer.store.admin import AdminRole
from mailer.web.admin.charts import Part, bar_chart, describe_step, regroup, share_bar
from mailer.web.admin.context import Admin
from mailer.web.admin.guard import SignedIn, guard

OUTCOME_PARTS: tuple[tuple[str, str, str], ...] = (
    (DeliveryStatus.SENT.value, "Delivered to the relay", "series-4"),
    (DeliveryStatus.DEFERRED.value, "Deferred (will retry)", "series-3"),
    (DeliveryStatus.BOUNCED.value, "Refused (bounced)", "series-2"),
    (DeliveryStatus.FAILED.value, "Failed", "series-2"),
    (DeliveryStatus.UNKNOWN.value, "Unknown", "series-3"),
    (DeliveryStatus.SKIPPED.value, "Skipped", "series-1"),
    (DeliveryStatus.QUEUED.value, "Waiting", "series-1"),
    (DeliveryStatus.SENDING.value, "In flight", "series-1"),
)


def routes(admin: Admin) -> list[Route]:
    store = admin.store

    def report(request: Request, signed_in: SignedIn) -> Response:
        campaign = store.get_campaign(int(request.path_params["campaign_id"]))
        figures = store.report_figures(campaign.id, campaign.status)
        outcomes = [(label, figures.outcomes.get(key, 0), css) for key, label, css in OUTCOME_PARTS]
        total = sum(figures.outcomes.values())
        breakdown = share_bar(
            [Part(label, value, css) for label, value, css in outcomes],
            chart_id="outcomes",
            title=f"Outcomes of {total:,} recipients",
        )
        sent, sent_step = regroup(
            figures.sent_per_minute, zone=admin.zone, key_format="%Y-%m-%d %H:%M"
        )
        left, left_step = regroup(
            figures.unsubscribes_per_hour, zone=admin.zone, key_format="%Y-%m-%d %H"
        )
        back, back_step = regroup(
            figures.bounces_per_hour, zone=admin.zone, key_format="%Y-%m-%d %H"
        )
        charts = []
        for chart_id, title, buckets, step, what in (
            ("sent", "Deliveries over time", sent, sent_step, "messages the relay accepted"),
            ("unsubscribes", "Unsubscribes over time", left, left_step, "unsubscribes"),
            (
                "bounces",
                "Bounces and complaints over time",
                back,
                back_step,
                "bounces and complaints",
            ),
        ):
            count = sum(b.count for b in buckets)
            peak = max(buckets, key=lambda b: b.count) if buckets else None
            description = (
                f"{count:,} {what} in {len(buckets)} periods of one {describe_step(step)}; "
                f"the most, {peak.count:,}, at {peak.label}."
                if peak is not None and count
                else f"No {what} yet."
            )
            charts.append(
                {
                    "id": chart_id,
                    "title": title,
                    "step": describe_step(step),
                    "buckets": buckets,
                    "description": description,
                    "svg": bar_chart(
                        buckets, chart_id=chart_id, title=title, description=description
                    )
                    if buckets
                    else None,
                }
            )
        later = figures.later
        return admin.page(
            signed_in,
            "report.html.j2",
            title=f"Report: campaign {campaign.id}",
            section="campaigns",
            campaign=campaign,
            figures=figures,
            total=total,
            outcomes=outcomes,
            breakdown=breakdown,
            charts=charts,
            later_bounced=later[LaterOutcome.BOUNCED.value]
            + later[LaterOutcome.SOFT_BOUNCED.value],
            complained=later[LaterOutcome.COMPLAINED.value],
            problems=store.problem_rows(campaign.id),
            answers=campaign_answers(store, campaign),
        )

    def report_csv(request: Request, _signed_in: SignedIn) -> Response:
        campaign = store.get_campaign(int(request.path_params["campaign_id"]))
        return StreamingResponse(
            report_chunks(
                store.iter_report(campaign.id), relays=bool(store.relay_counts(campaign.id))
            ),
            media_type="text/csv; charset=utf-8",
            headers={
                "content-disposition": f'attachment; filename="campaign-{campaign.id}-report.csv"'
            },
        )

    one = "/admin/campaigns/{campaign_id:id}"
    viewer = AdminRole.VIEWER
    return [
        Route(f"{one}/report", guard(admin, viewer, report), methods=["GET"]),
        Route(f"{one}/report.csv", guard(admin, viewer, report_csv), methods=["GET"]),
    ]
