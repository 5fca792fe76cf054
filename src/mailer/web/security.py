"""Request and response hardening, and a request log that never contains a token.

The token in /u/{token} is a bearer credential for one person's subscription: anyone who
reads it from a log could unsubscribe (or resubscribe) them; an RSVP link's (/r/{token})
could answer for them. uvicorn's own access log
prints the raw path, so `mailer serve` turns it off and this middleware logs instead,
with the token and any query string removed.

Form posts from the pages (resubscribe) must come from the pages themselves: see
`is_same_origin_form_post`. Paths with a trailing slash are served as the same path
without it, never redirected: Starlette's redirect would send the browser, or a mail
client's one-click POST, to whatever host the request's Host header named.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailer.logs import fields

# default-src 'none': the pages load nothing but their own stylesheet and run no script;
# form-action 'self': the only form posts back to us; frame-ancestors: no clickjacking of
# the Unsubscribe button; base-uri: an injected <base> could not redirect the form.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode("ascii")),
    # The page URL holds the token: a Referer carries at most our origin, never the path.
    # Not no-referrer: under it browsers send `Origin: null` on the pages' own form posts,
    # which the same-origin check could then not tell from a sandboxed attacker's frame.
    (b"referrer-policy", b"strict-origin"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
NO_STORE = (b"cache-control", b"no-store")

_TOKEN_PATH = re.compile(r"^/([ur])/[^/]*")

access_logger = logging.getLogger("mailer.web.access")


_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """`https://Lists.Example.org:443/u/x` -> `https://lists.example.org`, the form browsers
    send in Origin; None for anything that is not an http(s) URL with a host (`null`)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
        host = parts.hostname
        if parts.scheme not in _DEFAULT_PORTS or not host:
            return None
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except (ValueError, UnicodeError):
        return None
    if ":" in host:
        host = f"[{host}]"
    suffix = "" if port in (None, _DEFAULT_PORTS[parts.scheme]) else f":{port}"
    return f"{parts.scheme}://{host}{suffix}"


def is_same_origin_form_post(headers: Mapping[str, str], site_origin: str) -> bool:
    """Whether a form post may act: every origin header the browser sent names our site.

    - `Sec-Fetch-Site` (every current browser; scripts cannot set it): must be
      `same-origin`. `same-site` is refused too: a sibling subdomain is another site.
    - `Origin` (every browser since about 2020 on any POST): must be MAILER_BASE_URL's
      origin. `null` (sandboxed frames, privacy redirects) is refused.
    - Neither header: allowed. Only non-browser clients (which carry no victim's
      session or address, so there is nothing to forge) and browsers too old to send
      either omit both, and refusing them would break the form for those people.

    The RFC 8058 one-click POST is never checked: mail providers send it from their
    servers, with no Origin to check.
    """
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site.strip().lower() != "same-origin":
        return False
    origin = headers.get("origin")
    return origin is None or origin_of(origin) == site_origin


class TrailingSlashMiddleware:
    """`/u/TOKEN/` is answered as `/u/TOKEN`: the same page, the same one-click, no redirect.

    Starlette's own answer is a 307 to an absolute URL built from the Host header, which
    a client (or a poisoned cache) controls, and RFC 8058's POST must not be redirected.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path.rstrip("/") or "/"}
        await self.app(scope, receive, send)


def redact_path(path: str) -> str:
    """`/u/<token>/resubscribe` -> `/u/<redacted>/resubscribe`; RSVP links (`/r/`) too."""
    return _TOKEN_PATH.sub(r"/\1/<redacted>", path, count=1)


class SecurityHeadersMiddleware:
    """Adds the security headers to every response, and no-store unless it set its own
    Cache-Control (pages show a masked address and must not sit in shared caches)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [h for h in SECURITY_HEADERS if h[0] not in names]
                if b"cache-control" not in names:
                    headers.append(NO_STORE)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class AccessLogMiddleware:
    """One INFO line per request: method, redacted path, status, milliseconds."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 503  # what Pages.server_error answers if the app raises before responding

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            access_logger.info(
                fields(
                    method=scope["method"],
                    path=redact_path(scope["path"]),
                    status=status,
                    ms=f"{(time.perf_counter() - started) * 1000:.1f}",
                )
            )
