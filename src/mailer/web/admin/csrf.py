"""CSRF tokens: one random token per session, kept in the session's row (a synchronizer
token), sent back in a hidden field of every form that posts, or in an X-CSRF-Token
header; compared in constant time. Every admin POST is checked by the guard (guard.py)
before its handler runs, so a handler cannot forget.

Before signing in there is no session: the sign-in form carries a double-submit token
instead (the same random value in a cookie and in the form). Both are on top of the
same-origin check (Origin / Sec-Fetch-Site) every admin POST passes first.
"""

from __future__ import annotations

import hmac
import secrets

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

FIELD = "csrf_token"
HEADER = "x-csrf-token"
LOGIN_COOKIE = "mailer_admin_login"


def submitted_token(request: Request, form: FormData) -> str:
    value = form.get(FIELD)
    if isinstance(value, str) and value:
        return value
    return request.headers.get(HEADER, "")


def tokens_match(expected: str, submitted: str) -> bool:
    if not expected or not submitted:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), submitted.encode("utf-8", "replace"))


def new_login_token() -> str:
    return secrets.token_urlsafe(24)


def set_login_cookie(response: Response, token: str, *, secure: bool) -> None:
    """The sign-in form's token, also as a short-lived cookie (double submit)."""
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        path="/admin/login",
        secure=secure,
        httponly=True,
        samesite="strict",
    )


def login_token_ok(request: Request, form: FormData) -> bool:
    return tokens_match(request.cookies.get(LOGIN_COOKIE, ""), submitted_token(request, form))
