"""Signed-in browsers: a random secret in an HttpOnly cookie, its SHA-256 in the store.

- The cookie is HttpOnly and SameSite=Lax; Secure, and named with the `__Host-` prefix
  (no Domain, Path=/, so a sibling subdomain cannot set or shadow it), whenever
  MAILER_BASE_URL is https.
- A session ends after MAILER_ADMIN_IDLE_TIMEOUT seconds unused, and at the latest
  MAILER_ADMIN_SESSION_LIFETIME seconds after signing in; signing out, `mailer users
  remove` and `mailer users reset-password` delete its row, which ends it at the next
  request (every request reads the row: there is no cache to outlive it).
- Its last use is written at most once a minute, not at every request.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response

from mailer.store import Store
from mailer.store.admin import AdminSession, AdminUser

_TOUCH_EVERY = timedelta(seconds=60)


def session_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii", "replace")).hexdigest()


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    secure: bool

    @property
    def name(self) -> str:
        return "__Host-mailer_admin" if self.secure else "mailer_admin"


class SessionManager:
    def __init__(
        self,
        store: Store,
        *,
        now: Callable[[], datetime],
        idle_timeout: timedelta,
        lifetime: timedelta,
        secure: bool,
    ) -> None:
        self.store = store
        self.now = now
        self.idle_timeout = idle_timeout
        self.lifetime = lifetime
        self.cookie = CookiePolicy(secure=secure)

    def start(self, user: AdminUser, response: Response) -> AdminSession:
        """A new session for `user`, its cookie set on `response`."""
        secret = secrets.token_urlsafe(32)
        now = self.now()
        key = session_key(secret)
        self.store.add_admin_session(
            key=key,
            user_id=user.id,
            csrf_token=secrets.token_urlsafe(32),
            now=now,
            expires_at=now + self.lifetime,
        )
        response.set_cookie(
            self.cookie.name,
            secret,
            max_age=int(self.lifetime.total_seconds()),
            path="/",
            secure=self.cookie.secure,
            httponly=True,
            samesite="lax",
        )
        found = self.store.admin_session(key)
        assert found is not None
        return found

    def current(self, request: Request) -> AdminSession | None:
        """The live session the request's cookie names; None (and the row dropped when it
        has run out) otherwise."""
        secret = request.cookies.get(self.cookie.name)
        if not secret or len(secret) > 200:
            return None
        key = session_key(secret)
        found = self.store.admin_session(key)
        if found is None:
            return None
        now = self.now()
        if now >= found.expires_at or now - found.last_seen_at >= self.idle_timeout:
            self.store.end_admin_session(key)
            return None
        if now - found.last_seen_at >= _TOUCH_EVERY:
            self.store.touch_admin_session(key, now=now)
        return found

    def end(self, request: Request, response: Response) -> None:
        secret = request.cookies.get(self.cookie.name)
        if secret:
            self.store.end_admin_session(session_key(secret))
        self.forget_cookie(response)

    def forget_cookie(self, response: Response) -> None:
        response.delete_cookie(
            self.cookie.name,
            path="/",
            secure=self.cookie.secure,
            httponly=True,
            samesite="lax",
        )
