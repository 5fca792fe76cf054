"""The dashboard's areas, in menu order; a new area module is added here (one line)."""

from __future__ import annotations

from types import ModuleType

from mailer.web.admin import overview, signin, static

AREAS: tuple[ModuleType, ...] = (
    signin,
    static,
    overview,
)
"""Each has `routes(admin: Admin) -> list[Route]`."""
