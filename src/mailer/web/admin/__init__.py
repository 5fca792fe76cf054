"""The organiser's dashboard under /admin/ of `mailer serve` (issue 13): the contract.

Area modules
    Each area of the dashboard is a module here with one function

        def routes(admin: Admin) -> list[Route]

    and is listed in AREAS (areas.py); `admin_routes` collects them, and web/app.py adds
    them to the app's routes as plain `Route`s (no Mount: the route walk in
    tests/test_web_routes.py and tests/test_admin_security.py sees every one).
    Paths are absolute and start with /admin/ (e.g. "/admin/lists/{list_id:id}").
    Trailing slashes are stripped before routing (security.TrailingSlashMiddleware), so
    declare "/admin/x", never "/admin/x/". The overview is "/admin".

Guarding every route: guard.py
    Wrap every handler: Route(path, guard(admin, AdminRole.VIEWER, handler), methods=[...])
    - AdminRole.VIEWER: reading pages (viewers and organisers); AdminRole.ORGANISER:
      anything that changes something, and pages only organisers use (forms).
    - No session: GET/HEAD -> 303 to /admin/login?next=PATH; other methods -> 401.
      Wrong role -> 403. POST: same-origin check, then CSRF -> 403 when missing/wrong.
    - The handler is `def handler(request: Request, signed_in: SignedIn) -> Response`.
      A plain `def` runs in a worker thread (call the store freely); an `async def`
      runs on the loop (then wrap store calls in starlette.concurrency.run_in_threadpool).
      `signed_in.user` (AdminUser: name, role), `signed_in.may_change` (organiser?),
      `signed_in.form` (the POSTed form, already read and CSRF-checked; empty on GET).
    - GET never changes anything. Only /admin/login answers without a session
      (signin.PUBLIC_PATHS); the tests walk app.routes and fail on any other.
    - The request body limit is 16 KiB (app.py); an upload route passes its own
      `max_body_size=` to Route (as /webhooks/ses does).

CSRF: csrf.py
    Every <form method="post"> carries
        <input type="hidden" name="csrf_token" value="{{ csrf_token }}">
    (or a fetch() sends the X-CSRF-Token header). The token is random per session and
    kept in its row (a synchronizer token); the guard checks it before the handler.

Pages: context.Admin
    admin.page(signed_in, "lists.html.j2", title="Lists", section="lists", **context)
    renders assets/web/admin/<template> (autoescaped, StrictUndefined); templates
    `{% extends "base.html.j2" %}` and fill `{% block content %}` (base.html.j2 draws
    the menu: Overview, Campaigns, Lists, Events, with `section` marked current, and the
    user's name and a sign-out button). Context every template gets: organisation,
    title, section, user, may_change, csrf_token, timezone; filter `|local` shows a UTC
    datetime in MAILER_TIMEZONE. Show forms that change things only `{% if may_change %}`
    (the guard refuses viewers anyway).
    admin.refusal(signed_in, exc, title=..., section=...) shows a MailerError's message
    and hint (409 by default); admin.redirect("/admin/...") is the 303 after a POST.
    admin.store, admin.settings, admin.signer, admin.now (the injectable clock),
    admin.zone are there for handlers.

Styles and script: assets/web/admin/admin.css (served at /static/admin.css) and
    live.js (/static/admin-live.js). No inline script or style attribute (the CSP
    forbids both); classes from admin.css: .card, .grid, .table-wrap (wide tables scroll
    at 375 px), table.data, .num, .status-<status>, .notice, .error, .muted, .actions,
    button.danger, .inline (a one-button form). A page needing script adds its own
    static file to static.STATIC_FILES and a <script src> in `{% block scripts %}`.

Headers: headers.AdminHeadersMiddleware sets Cache-Control: no-store and the admin CSP
    on every /admin and /static/admin* response (a handler may send its own CSP, e.g. a
    frame's page); SecurityHeadersMiddleware adds the rest.

Users and sessions: passwords.py (Argon2id), sessions.py (store rows, idle timeout and
    absolute lifetime from MAILER_ADMIN_IDLE_TIMEOUT / MAILER_ADMIN_SESSION_LIFETIME),
    throttle.py (10 failures -> 15 minutes' lockout per account and per address).
    `mailer users add NAME --role organiser|viewer` creates users (cli/users_cmd.py).

Tests: tests/admin_support.py has `signed_in_client` helpers (an httpx client over ASGI
    with a session cookie and its CSRF token) for area tests.
"""

from __future__ import annotations

from starlette.routing import Route

import mailer.web.admin.ids  # noqa: F401  (registers {NAME:id} before any route is made)
from mailer.web.admin.context import Admin


def admin_routes(admin: Admin) -> list[Route]:
    """Every dashboard route, from every area in AREAS."""
    from mailer.web.admin.areas import AREAS

    found: list[Route] = []
    for area in AREAS:
        found.extend(area.routes(admin))
    return found


__all__ = ["Admin", "admin_routes"]
