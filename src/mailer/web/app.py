"""create_app: the routes and the middleware order, with every limit a parameter.

Middleware, outermost first (each sees what the next one answers):

    SecurityHeaders   every response gets the headers, including 413 and 429
    AdminHeaders      /admin (the dashboard): no-store always, and its own CSP
    AccessLog         one redacted line per request
    RequestBodyLimit  16 KiB: a one-click body is 26 bytes, the page's form is empty
                      (320 KiB on /webhooks/ses: an SNS message may be 256 KiB)
    TrailingSlash     /u/TOKEN/ is served as /u/TOKEN, never redirected

The POST budget for invalid links is applied by the handlers (pages.py), once the token
is checked and before the body is read: only they know whether a token is valid.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.routing import Route

from mailer.clock import utcnow
from mailer.config import Settings
from mailer.feedback.sns import Fetch, fetch_from_sns
from mailer.message.calendar import base_key, revision, schedule_key
from mailer.message.event import Event
from mailer.models import CampaignRecord
from mailer.store import Store
from mailer.tokens import TokenSigner
from mailer.web.admin import Admin, admin_routes
from mailer.web.admin.headers import AdminHeadersMiddleware
from mailer.web.admin.passwords import Passwords
from mailer.web.calendar_page import CalendarFeed, SequenceOf
from mailer.web.limits import MAX_BODY_BYTES, POST_BURST, POST_RATE_PER_MINUTE
from mailer.web.pages import Pages
from mailer.web.rendering import STYLESHEET, PageRenderer, web_templates_dir
from mailer.web.rsvp_page import Notifier, RsvpPages
from mailer.web.security import (
    AccessLogMiddleware,
    SecurityHeadersMiddleware,
    TrailingSlashMiddleware,
    origin_of,
)
from mailer.web.store_threads import StoreThreads
from mailer.web.throttle import ClientRateLimiter
from mailer.web.webhooks import SES_MAX_BODY_BYTES, Webhooks


def create_app(
    *,
    store: Store,
    signer: TokenSigner,
    settings: Settings,
    post_rate_per_minute: float | None = POST_RATE_PER_MINUTE,
    post_burst: int = POST_BURST,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_rate_clients: int = 10_000,
    templates_dir: Path | None = None,
    now: Callable[[], datetime] = utcnow,
    notify_promoted: Notifier | None = None,
    sns_fetch: Fetch = fetch_from_sns,
    passwords: Passwords | None = None,
) -> Starlette:
    """The unsubscribe app. `post_rate_per_minute` / `post_burst`: the budget per client
    for POSTs with an invalid link (`None` turns it off); valid links are never limited.
    `now`: the clock RSVP answers are checked against (`rsvp_closes`); `notify_promoted`:
    tells guests moved up from a waiting list (default: a message through the relay).
    `sns_fetch`: how SNS signing certificates are fetched (default: https from the SNS
    hosts only; tests pass their own, as no test can reach the real ones).
    `passwords`: the dashboard's password hashing (tests pass cheaper Argon2 parameters);
    `now` is also the dashboard's clock (sessions, lockouts, times shown)."""
    renderer = PageRenderer(
        templates_dir or web_templates_dir(settings.templates_dir),
        organisation=settings.from_name,
    )
    site_origin = origin_of(settings.base_url)
    if site_origin is None:  # the settings validator admits only http(s) URLs
        raise ValueError(f"MAILER_BASE_URL has no http(s) origin: {settings.base_url!r}")
    limiter = (
        None
        if post_rate_per_minute is None
        else ClientRateLimiter(
            per_minute=post_rate_per_minute, burst=post_burst, max_clients=max_rate_clients
        )
    )
    threads = StoreThreads()  # one limit for every recipient page's store calls
    pages = Pages(
        store=store,
        signer=signer,
        renderer=renderer,
        site_origin=site_origin,
        invalid_link_limiter=limiter,
        threads=threads,
    )
    calendar = CalendarFeed(
        store=store,
        signer=signer,
        settings=settings,
        sequence_of=_served_sequence(store),
        # Its own two: the .ics link is the same in every message of a campaign, and a
        # burst of fetches after a large send must not queue one-click unsubscribes.
        threads=StoreThreads(limit=2),
    )
    rsvp = RsvpPages(
        store=store,
        signer=signer,
        renderer=renderer,
        site_origin=site_origin,
        base_url=settings.base_url,
        now=now,
        notify=notify_promoted or _notify_by_mail(store, signer, settings, now),
        refuse_invalid_post=pages.refuse_invalid_post,
        threads=threads,
    )
    webhooks = Webhooks(store=store, signer=signer, settings=settings, fetch=sns_fetch, now=now)
    routes = [
        Route("/u/{token}", pages.show, methods=["GET"]),
        Route("/r/{token}", rsvp.show, methods=["GET"]),
        Route("/r/{token}", rsvp.answer, methods=["POST"]),
        Route("/c/{token}.ics", calendar.ics, methods=["GET"]),
        Route("/u/{token}", pages.unsubscribe, methods=["POST"]),
        Route("/u/{token}/resubscribe", pages.resubscribe, methods=["POST"]),
        Route("/healthz", pages.healthz, methods=["GET"]),
        Route("/webhooks/ses", webhooks.ses, methods=["POST"], max_body_size=SES_MAX_BODY_BYTES),
        Route("/webhooks/bounce", webhooks.bounce, methods=["POST"]),
        Route(f"/static/{STYLESHEET}", pages.stylesheet, methods=["GET"]),
    ]
    admin = Admin(
        store=store,
        settings=settings,
        signer=signer,
        site_origin=site_origin,
        now=now,
        passwords=passwords,
    )
    routes += admin_routes(admin)
    middleware = [
        Middleware(SecurityHeadersMiddleware),
        Middleware(AdminHeadersMiddleware),
        Middleware(AccessLogMiddleware),
        Middleware(RequestBodyLimitMiddleware, max_body_size=max_body_bytes),
        Middleware(TrailingSlashMiddleware),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: pages.http_error, Exception: pages.server_error},
    )
    # Never answer with a redirect built from the request's Host header (see security.py).
    app.router.redirect_slashes = False
    return app


def _notify_by_mail(
    store: Store, signer: TokenSigner, settings: Settings, now: Callable[[], datetime]
) -> Notifier:
    """The notice runs in a worker thread on an event loop of its own: it reads and writes
    the store with blocking calls (on SQLite a write waits up to the busy timeout, 30 s,
    while an import holds the database) and talks to the relay; on the server's loop
    either would stall every other request meanwhile."""

    def tell(campaign: CampaignRecord, event: Event, moved: tuple[int, ...]) -> int:
        from mailer.campaigns.rsvp import tell_promoted_via_smtp

        return asyncio.run(
            tell_promoted_via_smtp(
                store,
                settings=settings,
                signer=signer,
                campaign=campaign,
                event=event,
                subscriber_ids=moved,
                now=now(),
            )
        )

    async def notify(campaign: CampaignRecord, event: Event, moved: tuple[int, ...]) -> int:
        return await anyio.to_thread.run_sync(tell, campaign, event, moved)

    return notify


def _served_sequence(store: Store) -> SequenceOf:
    """The SEQUENCE the calendar link serves: the one the campaign's invite carried
    (its recorded schedule key against the earlier campaigns'), raised once more if the
    event file has changed since, so a calendar that fetches again updates its entry."""

    def sequence_of(campaign: CampaignRecord, event: Event) -> int:
        keys = store.earlier_schedule_keys(campaign.event_slug, campaign.id)
        current = schedule_key(event)
        if campaign.schedule_key is not None:
            keys.append(campaign.schedule_key)
            if base_key(campaign.schedule_key) == current:  # an update's mark is no change
                return revision(keys)
        return revision([*keys, current])

    return sequence_of
