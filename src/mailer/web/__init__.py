"""The unsubscribe web app (Starlette): thin handlers over `store` and `tokens`.

app.py        create_app: routes, middleware order, limits
pages.py      the handlers: GET/POST /u/{token}, resubscribe, /healthz
rendering.py  Jinja2 pages from assets/web/, the stylesheet, address masking
security.py   security headers and the redacted access log
ratelimit.py  per-client token bucket on POST
limits.py     default limits (importable without Starlette)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailer.web.app import create_app


def __getattr__(name: str) -> Any:
    # Lazy, so that `mailer.web.limits` (read by the CLI) does not load Starlette.
    if name == "create_app":
        from mailer.web.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["create_app"]
