"""The dashboard's areas, in menu order; a new area module is added here (one line)."""

from __future__ import annotations

from types import ModuleType

from mailer.web.admin import (
    campaigns_pages,
    events_pages,
    imports_pages,
    lists_pages,
    overview,
    reports,
    signin,
    static,
    subscribers_pages,
)

AREAS: tuple[ModuleType, ...] = (
    signin,
    static,
    overview,
    campaigns_pages,
    reports,
    lists_pages,
    imports_pages,
    subscribers_pages,
    events_pages,
)
"""Each has `routes(admin: Admin) -> list[Route]`."""
