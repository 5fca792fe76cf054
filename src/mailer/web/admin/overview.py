"""The overview, /admin/: what is scheduled, what is sending now, what went recently, and
the lists."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailer.store.admin import AdminRole
from mailer.web.admin.context import Admin
from mailer.web.admin.guard import SignedIn, guard


def routes(admin: Admin) -> list[Route]:
    def overview(_request: Request, signed_in: SignedIn) -> Response:
        return admin.page(signed_in, "overview.html.j2", title="Overview", section="overview")

    return [Route("/admin", guard(admin, AdminRole.VIEWER, overview), methods=["GET"])]
