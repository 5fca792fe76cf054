"""The dashboard's areas, in menu order; a new area module is added here (one line)."""

from __future__ import annotations

from types import ModuleType

from mailer.web.admin import campaigns_pages, overview, reports, signin, static

AREAS: tuple[ModuleType, ...] = (
    signin,
    static,
    overview,
    campaigns_pages,
    reports,
)
"""Each has `routes(admin: Admin) -> list[Route]`."""
