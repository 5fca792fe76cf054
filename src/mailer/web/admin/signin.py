"""Signing in and out: GET/POST /admin/login (the only admin routes open without a
session) and POST /admin/logout."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from mailer.logs import fields
from mailer.store.admin import AdminRole
from mailer.web.admin.context import Admin
from mailer.web.admin.csrf import login_token_ok, new_login_token, set_login_cookie
from mailer.web.admin.guard import SignedIn, guard
from mailer.web.security import is_same_origin_form_post

log = logging.getLogger("mailer.web.admin")

PUBLIC_PATHS = frozenset({"/admin/login"})
"""Admin paths that answer without a session; the route walk checks nothing else does."""

MAX_NAME = 100


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of ours under /admin/, never another site."""
    if not target:
        return "/admin/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/admin"):
        return "/admin/"
    if target.startswith("//") or "\\" in target:
        return "/admin/"
    return target


def routes(admin: Admin) -> list[Route]:
    def login_page(
        request: Request,
        *,
        error: str | None = None,
        status_code: int = 200,
        next_path: str | None = None,
    ) -> Response:
        token = new_login_token()
        response = admin.page(
            None,
            "login.html.j2",
            title="Sign in",
            status_code=status_code,
            error=error,
            next_path=safe_next(next_path or request.query_params.get("next")),
            login_token=token,
        )
        set_login_cookie(response, token, secure=admin.secure_cookies)
        return response

    async def show_login(request: Request) -> Response:
        return login_page(request)

    async def sign_in(request: Request) -> Response:
        if not is_same_origin_form_post(request.headers, admin.site_origin):
            return PlainTextResponse("This form must be sent from its own page.", 403)
        async with request.form(max_files=0, max_fields=10) as form:
            if not login_token_ok(request, form):
                return login_page(
                    request,
                    error="The sign-in form had expired; please try again.",
                    status_code=403,
                )
            name = str(form.get("name") or "").strip()[:MAX_NAME]
            password = str(form.get("password") or "")
            next_path = safe_next(str(form.get("next") or ""))
        address = request.client.host if request.client else "unknown"
        locked = await run_in_threadpool(admin.throttle.begin, name=name, address=address)
        if locked is not None:
            until = admin.local_time(locked.until, "%H:%M %Z")
            return login_page(
                request,
                error=f"Too many failed sign-ins. Try again after {until}.",
                status_code=429,
            )
        user = await run_in_threadpool(admin.store.find_admin_user, name) if name else None
        good = await run_in_threadpool(
            admin.passwords.verify, user.password_hash if user else None, password
        )
        if user is None or not good:
            await run_in_threadpool(admin.throttle.failed, name=name, address=address)
            return login_page(
                request, error="Wrong name or password.", status_code=401, next_path=next_path
            )
        await run_in_threadpool(admin.throttle.succeeded, name=name, address=address)
        if admin.passwords.needs_rehash(user.password_hash):
            rehashed = await run_in_threadpool(admin.passwords.hasher.hash, password)
            await run_in_threadpool(
                admin.store.rehash_admin_password, user.id, password_hash=rehashed, now=admin.now()
            )
        response = RedirectResponse(next_path, status_code=303)
        await run_in_threadpool(admin.sessions.start, user, response)
        log.info(fields(event="admin-signed-in", user=user.name, client=address))
        return response

    def sign_out(request: Request, signed_in: SignedIn) -> Response:
        response = RedirectResponse("/admin/login", status_code=303)
        admin.sessions.end(request, response)
        log.info(fields(event="admin-signed-out", user=signed_in.user.name))
        return response

    return [
        Route("/admin/login", show_login, methods=["GET"]),
        Route("/admin/login", sign_in, methods=["POST"]),
        Route("/admin/logout", guard(admin, AdminRole.VIEWER, sign_out), methods=["POST"]),
    ]
