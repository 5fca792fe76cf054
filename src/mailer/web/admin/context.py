"""`Admin`: what every dashboard page shares: the store, settings, clock, sessions, the
Jinja2 environment (assets/web/admin/) and the answers pages give (a page, a refusal, a
redirect after a POST)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from mailer.assets import BUILTIN_WEB
from mailer.config import Settings
from mailer.errors import MailerError
from mailer.message.headline import campaign_subject, readable_subject
from mailer.store import Store
from mailer.tokens import TokenSigner
from mailer.web.admin.guard import SignedIn
from mailer.web.admin.passwords import Passwords
from mailer.web.admin.sessions import SessionManager
from mailer.web.admin.throttle import SignInThrottle
from mailer.web.compiled import CompiledTemplates

ADMIN_TEMPLATES = BUILTIN_WEB / "admin"
# Every app's dashboard Environment is set up alike (below): they share compiled code.
# `local` differs per app (its zone) but is a plain filter in each, applied to no
# constant, so the code compiled for one app is the code for any.
COMPILED = CompiledTemplates()

NAVIGATION: tuple[tuple[str, str], ...] = (
    ("overview", "Overview"),
    ("campaigns", "Campaigns"),
    ("lists", "Lists"),
    ("events", "Events"),
)
"""(section, label): the menu; section `x` is the page /admin/x (overview: /admin/)."""

ORGANISER_SECTIONS = frozenset({"lists", "events"})
"""Sections with people's addresses and the messages they get: organisers only. A viewer
(a treasurer, a committee member) reads the overview and the campaigns' reports."""


def section_href(section: str) -> str:
    return "/admin" if section == "overview" else f"/admin/{section}"


class Admin:
    def __init__(
        self,
        *,
        store: Store,
        settings: Settings,
        signer: TokenSigner,
        site_origin: str,
        now: Callable[[], datetime],
        passwords: Passwords | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.signer = signer
        self.site_origin = site_origin
        self.now = now
        self.zone = ZoneInfo(settings.timezone)
        self.passwords = passwords or Passwords()
        secure = settings.base_url.lower().startswith("https://")
        self.secure_cookies = secure
        self.sessions = SessionManager(
            store,
            now=now,
            idle_timeout=timedelta(seconds=settings.admin_idle_timeout),
            lifetime=timedelta(seconds=settings.admin_session_lifetime),
            secure=secure,
        )
        self.throttle = SignInThrottle(store, now=now)
        self.environment = Environment(
            loader=FileSystemLoader(ADMIN_TEMPLATES),
            autoescape=True,
            undefined=StrictUndefined,
            auto_reload=False,
            bytecode_cache=COMPILED,
        )
        self.environment.filters["local"] = self.local_time
        # A campaign's subject as people read it (`[first name]`), not its template.
        self.environment.filters["campaign_subject"] = campaign_subject
        self.environment.filters["readable_subject"] = readable_subject
        self.environment.globals["section_href"] = section_href
        for name in self.environment.list_templates(extensions=["j2"]):
            self.environment.get_template(name)  # fail at startup, not at first visit

    # -- times --------------------------------------------------------------------------

    def local_time(self, value: datetime | None, pattern: str = "%a %d %b %Y, %H:%M %Z") -> str:
        """A stored UTC time in the organiser's zone (MAILER_TIMEZONE)."""
        if value is None:
            return "-"
        return value.astimezone(self.zone).strftime(pattern)

    # -- answers ------------------------------------------------------------------------

    def page(
        self,
        signed_in: SignedIn | None,
        template: str,
        *,
        title: str,
        section: str = "",
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> Response:
        """A dashboard page drawn in base.html.j2: `section` lights up its menu entry."""
        html = self.environment.get_template(template).render(
            organisation=self.settings.from_name,
            title=title,
            section=section,
            navigation=[
                (key, label)
                for key, label in NAVIGATION
                if signed_in is None or signed_in.may_change or key not in ORGANISER_SECTIONS
            ],
            user=signed_in.user if signed_in else None,
            may_change=signed_in.may_change if signed_in else False,
            csrf_token=signed_in.csrf_token if signed_in else "",
            timezone=self.settings.timezone,
            **context,
        )
        return HTMLResponse(html, status_code=status_code, headers=headers)

    def refusal(
        self,
        signed_in: SignedIn,
        error: MailerError,
        *,
        title: str,
        section: str = "",
        status_code: int = 409,
        back: str | None = None,
    ) -> Response:
        """A page saying what was refused and why (the CLI's message and hint)."""
        return self.page(
            signed_in,
            "refusal.html.j2",
            title=title,
            section=section,
            status_code=status_code,
            error=str(error),
            hint=error.hint,
            back=back,
        )

    def redirect(self, path: str) -> Response:
        """After a successful POST: 303 to a page under /admin/ (never a URL from input)."""
        if not path.startswith("/admin"):
            path = "/admin/"
        return RedirectResponse(path, status_code=303)


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")
