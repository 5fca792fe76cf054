"""The dashboard's stylesheet and its one script, from assets/web/admin/, read at startup.

Served outside /admin/ (under /static/) so the sign-in page can use the stylesheet
before anyone is signed in; they hold nothing private.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailer.web.admin.context import ADMIN_TEMPLATES, Admin

STATIC_FILES: dict[str, tuple[str, str]] = {
    "/static/admin.css": ("admin.css", "text/css; charset=utf-8"),
    "/static/admin-live.js": ("live.js", "text/javascript; charset=utf-8"),
    "/static/admin-lists.css": ("lists.css", "text/css; charset=utf-8"),
    "/static/admin-import.js": ("import.js", "text/javascript; charset=utf-8"),
}


def _serving(body: bytes, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(_request: Request) -> Response:
        return Response(body, media_type=media_type)

    return endpoint


def routes(_admin: Admin) -> list[Route]:
    return [
        Route(path, _serving((ADMIN_TEMPLATES / name).read_bytes(), media_type), methods=["GET"])
        for path, (name, media_type) in STATIC_FILES.items()
    ]
