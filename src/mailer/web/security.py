"""Response hardening and a request log that never contains a token.

The token in /u/{token} is a bearer credential for one person's subscription: anyone who
reads it from a log could unsubscribe (or resubscribe) them. uvicorn's own access log
prints the raw path, so `mailer serve` turns it off and this middleware logs instead,
with the token and any query string removed.
"""

from __future__ import annotations

import logging
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# default-src 'none': the pages load nothing but their own stylesheet and run no script;
# form-action 'self': the only form posts back to us; frame-ancestors: no clickjacking of
# the Unsubscribe button; base-uri: an injected <base> could not redirect the form.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode("ascii")),
    # The page URL holds the token: never send it to another site in a Referer.
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
NO_STORE = (b"cache-control", b"no-store")

_TOKEN_PATH = re.compile(r"^/u/[^/]*")

access_logger = logging.getLogger("mailer.web.access")


def redact_path(path: str) -> str:
    """`/u/<token>/resubscribe` -> `/u/<redacted>/resubscribe`."""
    return _TOKEN_PATH.sub("/u/<redacted>", path, count=1)


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
                "%s %s %d %.1fms",
                scope["method"],
                redact_path(scope["path"]),
                status,
                (time.perf_counter() - started) * 1000,
            )
