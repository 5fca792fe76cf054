"""The handlers: thin glue between a verified token, the store and a rendered page.

GET never changes anything (mail scanners and link previewers fetch every URL in a
message); POST acts, whatever its body, and answers 200 with a page, never a redirect,
as RFC 8058 asks of one-click unsubscribe. Every token failure and every token naming a
subscriber or list that no longer exists gets the same 404, so the app reveals nothing;
a client sending too many of those POSTs gets 429 (valid tokens are never limited).

Which POSTs check where they come from (`security.is_same_origin_form_post`):
- POST /u/{token} (unsubscribe): never. It is RFC 8058's one-click URL, posted by mail
  providers' servers with no Origin; a cross-site page can always send the one-click
  body anyway, so checking the page's own form there would protect nothing and could
  only stop someone from leaving a list.
- POST /u/{token}/resubscribe: always. Putting someone back on a list must be their own
  click on our page, not a form on another site that holds their link.

A test message's token (`mailer send --test-to`) names nobody: every route answers it
with the "this was a test" page and changes nothing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from mailer.errors import NotFoundError, StoreError, TokenError
from mailer.logs import fields
from mailer.models import PageRecipient, UnsubscribeSource
from mailer.store import Store
from mailer.tokens import LinkClaims, TestMessageClaims, TokenSigner, UnsubscribeClaims
from mailer.web.rendering import PageRenderer, mask_email
from mailer.web.security import SECURITY_HEADERS, is_same_origin_form_post
from mailer.web.store_threads import StoreThreads
from mailer.web.throttle import ClientRateLimiter

logger = logging.getLogger("mailer.web")

ONE_CLICK_FIELD, ONE_CLICK_VALUE = "List-Unsubscribe", "One-Click"
_ONE_CLICK_BODY = b"List-Unsubscribe=One-Click"


T = TypeVar("T")
P = ParamSpec("P")


class Pages:
    def __init__(
        self,
        *,
        store: Store,
        signer: TokenSigner,
        renderer: PageRenderer,
        site_origin: str,
        invalid_link_limiter: ClientRateLimiter | None = None,
        threads: StoreThreads | None = None,
    ) -> None:
        self.store = store
        self.signer = signer
        self.renderer = renderer
        self.site_origin = site_origin  # MAILER_BASE_URL's origin: where our forms live
        self.invalid_link_limiter = invalid_link_limiter
        self._threads = threads or StoreThreads()

    async def _db(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._threads.run(call, *args, **kwargs)

    # -- routes -------------------------------------------------------------------------

    async def show(self, request: Request) -> Response:
        """GET /u/{token}: who, which list, and the button. Changes nothing."""
        claims = self._claims(request)
        if isinstance(claims, TestMessageClaims):
            return self._test_message_page(request)
        recipient = None if claims is None else await self._db(self._lookup, claims)
        if recipient is None:
            return self.renderer.invalid_link(root_path=_root(request))
        return self._render(request, "unsubscribe.html.j2", recipient)

    async def unsubscribe(self, request: Request) -> Response:
        """POST /u/{token}: off the list now; idempotent; 200 with a confirmation."""
        claims = self._claims(request)
        if claims is None:
            return self.refuse_invalid_post(request)
        source = await _source_of(request)
        if isinstance(claims, TestMessageClaims):
            logger.info(fields(event="test-link-posted", list=claims.list_id, source=source.value))
            return self._test_message_page(request)
        recipient = await self._db(self._unsubscribe, claims, source)
        if recipient is None:
            return self.refuse_invalid_post(request)
        logger.info(
            fields(
                event="unsubscribed",
                subscriber=claims.subscriber_id,
                list=claims.list_id,
                source=source.value,
                campaign=claims.campaign_id,
            )
        )
        return self._render(request, "unsubscribed.html.j2", recipient)

    async def resubscribe(self, request: Request) -> Response:
        """POST /u/{token}/resubscribe: undo a mistaken click (the person's own unsubscribe
        only; a bounce or complaint stays in force)."""
        claims = self._claims(request)
        if claims is None:
            return self.refuse_invalid_post(request)
        if not is_same_origin_form_post(request.headers, self.site_origin):
            logger.warning(fields(event="resubscribe-refused", reason="posted from another site"))
            return self.renderer.message(
                status_code=403,
                title="Please use the button on our page",
                text="This form only works from its own page. Open the link in your email "
                "again and press the button there.",
                root_path=_root(request),
            )
        await request.body()  # drain it, so the body limit applies here too
        if isinstance(claims, TestMessageClaims):
            return self._test_message_page(request)
        recipient = await self._db(self._resubscribe, claims)
        if recipient is None:
            return self.refuse_invalid_post(request)
        logger.info(
            fields(event="resubscribed", subscriber=claims.subscriber_id, list=claims.list_id)
        )
        return self._render(request, "resubscribed.html.j2", recipient)

    async def healthz(self, _request: Request) -> Response:
        """200 "ok" when the database answers; 503 otherwise (for the load balancer)."""
        try:
            await self._db(self.store.ping)
        except (SQLAlchemyError, StoreError):
            logger.exception(fields(event="health-failed", reason="the database does not answer"))
            return PlainTextResponse("database unavailable", status_code=503)
        return PlainTextResponse("ok")

    async def stylesheet(self, _request: Request) -> Response:
        return Response(
            self.renderer.stylesheet,
            media_type="text/css",
            headers={"Cache-Control": "public, max-age=3600"},
        )

    # -- error pages --------------------------------------------------------------------

    async def http_error(self, request: Request, exc: Exception) -> Response:
        """404 (unknown path), 405, 413 (body too large) as pages with the usual headers."""
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 404:
            return self.renderer.invalid_link(root_path=_root(request))
        titles = {405: "Method not allowed", 413: "Request too large"}
        return self.renderer.message(
            status_code=status,
            title=titles.get(status, "Request refused"),
            text="This address only accepts the forms on its own pages.",
            root_path=_root(request),
            headers=getattr(exc, "headers", None),
        )

    async def server_error(self, request: Request, exc: Exception) -> Response:
        """Anything unexpected (the database down, mostly): 503, try again later.

        This runs outside the middleware stack, so it adds the security headers itself.
        """
        logger.error(fields(event="request-failed", error=type(exc).__name__), exc_info=exc)
        response = self.renderer.message(
            status_code=503,
            title="Please try again in a few minutes",
            text="We could not handle your request just now. Please try the link again later.",
            root_path=_root(request),
            headers={"Retry-After": "60"},
        )
        for name, value in SECURITY_HEADERS:
            response.headers[name.decode("ascii")] = value.decode("ascii")
        return response

    # -- helpers ------------------------------------------------------------------------

    def _claims(self, request: Request) -> LinkClaims | None:
        try:
            return self.signer.verify_link(str(request.path_params["token"]))
        except TokenError:
            return None

    def refuse_invalid_post(self, request: Request) -> Response:
        """The 404 for a POST with an invalid link, or 429 once this client has sent too
        many of them. Valid links never come here, so they are never limited."""
        if self.invalid_link_limiter is not None:
            client = request.client.host if request.client else "unknown"
            wait = self.invalid_link_limiter.take(client)
            if wait > 0:
                return self.renderer.message(
                    status_code=429,
                    title="Too many requests",
                    text="Please wait a moment and try again.",
                    root_path=_root(request),
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
        return self.renderer.invalid_link(root_path=_root(request))

    def _test_message_page(self, request: Request) -> Response:
        return self.renderer.page("test_message.html.j2", root_path=_root(request))

    # The store work of one request runs in one worker thread (one hop from the loop).

    def _lookup(self, claims: UnsubscribeClaims) -> PageRecipient | None:
        return self.store.page_recipient(claims.subscriber_id, claims.list_id)

    def _unsubscribe(
        self, claims: UnsubscribeClaims, source: UnsubscribeSource
    ) -> PageRecipient | None:
        # Look up first: a token naming a deleted list must get the 404, not a failed insert.
        recipient = self._lookup(claims)
        if recipient is None:
            return None
        try:
            self.store.unsubscribe(
                claims.subscriber_id,
                claims.list_id,
                source=source,
                campaign_id=claims.campaign_id,
            )
        except NotFoundError:  # erased between the two queries
            return None
        return recipient

    def _resubscribe(self, claims: UnsubscribeClaims) -> PageRecipient | None:
        recipient = self._lookup(claims)
        if recipient is None:
            return None
        try:
            self.store.resubscribe(claims.subscriber_id, claims.list_id)
        except NotFoundError:
            return None
        return recipient

    def _render(self, request: Request, template: str, recipient: PageRecipient) -> Response:
        return self.renderer.page(
            template,
            root_path=_root(request),
            token=str(request.path_params["token"]),
            list_name=recipient.list_title or recipient.list_name,  # what recipients read
            masked_email=mask_email(recipient.email),
            unsubscribed=recipient.unsubscribed,
        )


async def _source_of(request: Request) -> UnsubscribeSource:
    """one-click when the body carries RFC 8058's `List-Unsubscribe=One-Click` (form
    encoded or multipart), else page. Any body unsubscribes; only the record differs."""
    body = await request.body()
    if body.strip() == _ONE_CLICK_BODY:
        return UnsubscribeSource.ONE_CLICK
    try:
        form = await request.form(max_files=0, max_fields=20, max_part_size=len(body) + 1)
    except HTTPException:  # malformed multipart: still an unsubscribe, from somewhere
        return UnsubscribeSource.PAGE
    try:
        value = form.get(ONE_CLICK_FIELD)
    finally:
        await form.close()
    return UnsubscribeSource.ONE_CLICK if value == ONE_CLICK_VALUE else UnsubscribeSource.PAGE


def _root(request: Request) -> str:
    """The path prefix the app is mounted under (uvicorn --root-path), for links and forms."""
    return str(request.scope.get("root_path", "")).rstrip("/")
