"""GET and POST /r/{token}: a guest answers an invitation (issue 14).

GET shows the event, the guest's current answer and the form (three buttons, guests and
note fields) and changes nothing: mail scanners and link previewers (Outlook Safe Links,
Gmail's image proxy) open every link of a message. Only the page's own form POST records.

Who may POST: the token in the URL is the capability (128-bit tag, per campaign and
guest), as on the unsubscribe pages. On top, the POST must come from our own page
(`is_same_origin_form_post`: Sec-Fetch-Site / Origin against MAILER_BASE_URL, the check
the resubscribe form has): another site that learned a guest's link (a forwarded mail,
a Referer elsewhere) cannot answer for them by making their browser post a hidden form.
Chosen over a per-page nonce because it needs no server state or cookie, works with
JavaScript off, and a scanner that only GETs can post nothing either way.

Bad, forged or altered tokens, erased guests, campaigns gone or event files that no
longer take answers: the app's one 404, nothing changed; POSTs of those count against the
client's invalid-link budget (throttle.py), as unsubscribe's do. A test message's token
shows the "this was a test" page. The link keeps working after the guest unsubscribed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import ParamSpec, TypeVar

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from mailer.campaigns.rsvp import (
    AnswersClosed,
    Invitation,
    open_invitation,
    read_answer,
    record_answer,
)
from mailer.errors import InputError, TokenError
from mailer.logs import fields
from mailer.message.dates import format_when
from mailer.message.event import Event
from mailer.models import CampaignRecord, RsvpChoice, RsvpOutcome, RsvpStatus
from mailer.store import Store
from mailer.tokens import RsvpClaims, TestMessageClaims, TokenSigner, calendar_url
from mailer.web.rendering import PageRenderer, mask_email
from mailer.web.security import is_same_origin_form_post
from mailer.web.store_threads import StoreThreads

logger = logging.getLogger("mailer.web")

T = TypeVar("T")
P = ParamSpec("P")

Notifier = Callable[[CampaignRecord, Event, tuple[int, ...]], Awaitable[int]]
"""Tells the guests moved up from the waiting list (campaigns.rsvp.tell_promoted)."""

LABELS = {
    RsvpStatus.YES: "I'll come",
    RsvpStatus.WAITING: "I'll come: on the waiting list",
    RsvpStatus.MAYBE: "Maybe",
    RsvpStatus.NO: "Can't come",
}
CHOICES = [(c.value, LABELS[RsvpStatus(c.value)]) for c in RsvpChoice]


class RsvpPages:
    def __init__(
        self,
        *,
        store: Store,
        signer: TokenSigner,
        renderer: PageRenderer,
        site_origin: str,
        base_url: str,
        now: Callable[[], datetime],
        notify: Notifier | None,
        refuse_invalid_post: Callable[[Request], Response],
        threads: StoreThreads | None = None,
    ) -> None:
        self.store = store
        self.signer = signer
        self.renderer = renderer
        self.site_origin = site_origin
        self.base_url = base_url
        self.now = now
        self.notify = notify
        # The unsubscribe pages' answer to a bad link: 404, or 429 past the client's budget.
        self.refuse_invalid_post = refuse_invalid_post

        self._threads = threads or StoreThreads()

    async def _db(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._threads.run(call, *args, **kwargs)

    # -- routes -------------------------------------------------------------------------

    async def show(self, request: Request) -> Response:
        """GET /r/{token}: the event, the current answer and the form. Changes nothing."""
        claims = self._claims(request)
        if isinstance(claims, TestMessageClaims):
            return self.renderer.page(
                "test_message.html.j2", root_path=_root(request), about="rsvp"
            )
        invitation = None if claims is None else await self._open(claims)
        if claims is None or invitation is None:
            return self.renderer.invalid_link(root_path=_root(request))
        suggested = request.query_params.get("answer")
        return self._page(request, invitation, suggested=suggested)

    async def answer(self, request: Request) -> Response:
        """POST /r/{token}: record the answer pressed on the page (from our page only)."""
        claims = self._claims(request)
        if claims is None:
            return self.refuse_invalid_post(request)
        if not is_same_origin_form_post(request.headers, self.site_origin):
            logger.warning(fields(event="rsvp-refused", reason="posted from another site"))
            return self.renderer.message(
                status_code=403,
                title="Please use the buttons on our page",
                text="This form only works from its own page. Open the link in your email "
                "again and answer there.",
                root_path=_root(request),
            )
        form = await request.form(max_files=0, max_fields=10)
        try:
            fields_given = {k: form.get(k) for k in ("answer", "guests", "note")}
        finally:
            await form.close()
        if isinstance(claims, TestMessageClaims):
            return self.renderer.page(
                "test_message.html.j2", root_path=_root(request), about="rsvp"
            )
        invitation = await self._open(claims)
        if invitation is None:
            return self.refuse_invalid_post(request)
        try:
            choice, guests, note = read_answer(
                invitation.event,
                answer=_text(fields_given["answer"]),
                guests=_text(fields_given["guests"]),
                note=_text(fields_given["note"]),
            )
        except InputError as exc:
            return self._page(request, invitation, status_code=400, error=exc.message)
        now = self.now()
        try:
            outcome = await self._db(
                record_answer,
                self.store,
                invitation,
                subscriber_id=claims.subscriber_id,
                choice=choice,
                guests=guests,
                note=note,
                now=now,
            )
        except AnswersClosed:
            return self._page(request, invitation, status_code=403)
        logger.info(
            fields(
                event="rsvp",
                campaign=invitation.campaign.id,
                subscriber=claims.subscriber_id,
                answer=outcome.rsvp.status.value,
                changed=outcome.changed,
                moved_up=len(outcome.promoted),
            )
        )
        fresh = await self._open(claims)
        response = self._page(request, fresh or invitation, outcome=outcome)
        if outcome.promoted and self.notify is not None:
            # Once the page has gone out: whoever freed the place never waits on the relay.
            response.background = BackgroundTask(
                self._tell, invitation.campaign, invitation.event, outcome.promoted
            )
        return response

    async def _tell(self, campaign: CampaignRecord, event: Event, moved: tuple[int, ...]) -> None:
        """Tell the guests moved up; a failure leaves them marked untold (`mailer rsvps`
        says so), never the answer undone."""
        assert self.notify is not None
        try:
            await self.notify(campaign, event, moved)
        except Exception as exc:
            logger.error(fields(event="rsvp-notice-failed", error=type(exc).__name__))

    # -- helpers ------------------------------------------------------------------------

    def _claims(self, request: Request) -> RsvpClaims | TestMessageClaims | None:
        try:
            return self.signer.verify_rsvp(str(request.path_params["token"]))
        except TokenError:
            return None

    async def _open(self, claims: RsvpClaims) -> Invitation | None:
        return await self._db(open_invitation, self.store, claims, now=self.now())

    def _page(
        self,
        request: Request,
        invitation: Invitation,
        *,
        status_code: int = 200,
        suggested: str | None = None,
        error: str | None = None,
        outcome: RsvpOutcome | None = None,
    ) -> Response:
        event = invitation.event
        rsvp = invitation.rsvp
        current = rsvp.status if rsvp is not None else None
        if suggested not in {value for value, _ in CHOICES}:
            suggested = None
        primary = suggested or (
            (RsvpChoice.YES.value if current is RsvpStatus.WAITING else current.value)
            if current is not None
            else RsvpChoice.YES.value
        )
        ics_token = self.signer.sign_calendar(campaign_id=invitation.campaign.id)
        return self.renderer.page(
            "rsvp.html.j2",
            status_code=status_code,
            root_path=_root(request),
            token=str(request.path_params["token"]),
            title=event.title,
            when=format_when(event.starts_at),
            where=event.place or "online",
            masked_email=mask_email(invitation.email),
            current=current.value if current is not None else None,
            current_label=LABELS[current] if current is not None else None,
            guests=rsvp.guests if rsvp is not None else 0,
            note=rsvp.note if rsvp is not None else "",
            max_guests=event.max_guests,
            note_prompt=event.rsvp_note_prompt,
            choices=CHOICES,
            primary=primary,
            closed=invitation.closed,
            closes=format_when(event.answers_close),
            waiting_position=invitation.waiting_position,
            answered=outcome is not None,
            unchanged=outcome is not None and not outcome.changed,
            refused_guests=outcome is not None and outcome.refused_guests,
            error=error,
            ics_url=calendar_url(self.base_url, ics_token),
        )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")
