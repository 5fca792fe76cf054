"""`guard`: wraps every admin handler; nothing under /admin/ answers without it (the login
page is the one exception, see signin.py, and the route walk in the tests holds to that).

In order, for any request:
1. no live session: GET/HEAD -> 303 to /admin/login?next=PATH; anything else -> 401;
2. the user's role may not do this -> 403 (a viewer on any POST, or an organiser page);
3. POST: not from our own origin, or the CSRF token missing or wrong -> 403;
then the handler runs, with the session and the form already read.

Handlers may be plain functions (run in a worker thread, so their store calls do not
block the event loop) or coroutines.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from mailer.errors import NotFoundError
from mailer.logs import fields
from mailer.store.admin import AdminRole, AdminSession, AdminUser
from mailer.web.admin.csrf import submitted_token, tokens_match
from mailer.web.admin.sessions import SessionManager
from mailer.web.security import is_same_origin_form_post

log = logging.getLogger("mailer.web.admin")

SAFE_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class SignedIn:
    """What a guarded handler gets beside the request."""

    session: AdminSession
    form: FormData
    """The posted form (already CSRF-checked); empty for GET."""

    @property
    def user(self) -> AdminUser:
        return self.session.user

    @property
    def csrf_token(self) -> str:
        return self.session.csrf_token

    @property
    def may_change(self) -> bool:
        return self.session.user.role is AdminRole.ORGANISER


class Guarded(Protocol):
    """What the guard needs of the dashboard (context.Admin has it)."""

    sessions: SessionManager
    site_origin: str


Handler = Callable[[Request, SignedIn], Response | Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def guard(admin: Guarded, role: AdminRole, handler: Handler) -> Endpoint:
    """The endpoint for a Route: `handler` behind sign-in, role and CSRF checks."""

    async def endpoint(request: Request) -> Response:
        session = await run_in_threadpool(admin.sessions.current, request)
        if session is None:
            if request.method in SAFE_METHODS:
                target = request.url.path
                if request.url.query:
                    target += "?" + request.url.query
                return RedirectResponse(f"/admin/login?next={quote(target, safe='')}", 303)
            return PlainTextResponse("Sign in first.", status_code=401)
        if not session.user.role.may(role):
            return PlainTextResponse("Your role may not do this.", status_code=403)
        form = FormData()
        if request.method not in SAFE_METHODS:
            if not is_same_origin_form_post(request.headers, admin.site_origin):
                log.warning(fields(event="admin-cross-origin-post", path=request.url.path))
                return PlainTextResponse("This form must be sent from its own page.", 403)
            form = await request.form()
            if not tokens_match(session.csrf_token, submitted_token(request, form)):
                log.warning(fields(event="admin-csrf-refused", path=request.url.path))
                return PlainTextResponse(
                    "The form had expired or was not ours; go back, reload and try again.",
                    status_code=403,
                )
        signed_in = SignedIn(session=session, form=form)
        try:
            return await _answer(handler, request, signed_in)
        except NotFoundError:
            # A campaign, list or subscriber named in the path that does not exist.
            return PlainTextResponse("Not found.", status_code=404)
        finally:
            await form.close()  # uploaded files spooled to disk are removed now

    endpoint.__name__ = getattr(handler, "__name__", "admin_endpoint")
    endpoint.__doc__ = handler.__doc__
    endpoint.required_role = role  # type: ignore[attr-defined]  # read by the route walk
    return endpoint


async def _answer(handler: Handler, request: Request, signed_in: SignedIn) -> Response:
    if inspect.iscoroutinefunction(handler):
        result = handler(request, signed_in)
        assert inspect.isawaitable(result)
        answered = await result
        assert isinstance(answered, Response)
        return answered
    answer = await run_in_threadpool(handler, request, signed_in)
    assert isinstance(answer, Response)
    return answer
