"""Headers on every response under /admin/ (and the dashboard's static files):

- `Cache-Control: no-store`, always (a shared or back-button cache must not keep a page
  with subscribers' addresses, nor a CSV); it replaces whatever a handler set.
- A Content-Security-Policy allowing our own script and styles only (no inline script,
  no inline style attribute), fetch() to ourselves, and frames only from ourselves (the
  sandboxed event preview). A handler may send its own CSP (the preview frame's page
  does, to be framed by us): it is kept.
- The recipient pages' headers (nosniff, frame denial, referrer policy, COOP) are added
  after this by SecurityHeadersMiddleware, which keeps any a handler set.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ADMIN_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
ADMIN_PREFIXES = ("/admin", "/static/admin")


def is_admin_path(path: str) -> bool:
    return any(
        path == p
        or path.startswith(p + "/")
        or path.startswith(p + ".")
        or path.startswith(p + "-")
        for p in ADMIN_PREFIXES
    )


class AdminHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_admin_path(scope.get("path", "")):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"cache-control"
                ]
                names = {name.lower() for name, _ in headers}
                headers.append((b"cache-control", b"no-store"))
                if b"content-security-policy" not in names:
                    headers.append(
                        (b"content-security-policy", ADMIN_CONTENT_SECURITY_POLICY.encode())
                    )
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
