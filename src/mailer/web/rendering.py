"""The pages' HTML: Jinja2 templates from assets/web/, one stylesheet, masked addresses.

Pages are plain HTML forms with no script, so they work in any browser, with JavaScript
off, and under a Content-Security-Policy of default-src 'none'.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined
from starlette.responses import HTMLResponse, Response

from mailer.assets import BUILTIN_WEB
from mailer.web.compiled import CompiledTemplates

STYLESHEET = "style.css"
ADMIN_FOLDER = "admin/"
# The pages shipped in the package, used unless MAILER_TEMPLATES_DIR has a web/ of its own.
BUILTIN_TEMPLATES = BUILTIN_WEB
# Every app's page Environment is set up alike (below): they share compiled code, each
# template keyed by its file (the organiser's or the built-in one).
COMPILED = CompiledTemplates()


def mask_email(email: str) -> str:
    """`zoe@example.org` -> `z***@example.org`: enough to recognise, too little to harvest."""
    local, at, domain = email.rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def web_templates_dir(templates_dir: Path) -> Path:
    """`templates_dir/web` if the organiser has one, else the built-in pages."""
    candidate = templates_dir / "web"
    return candidate if (candidate / "base.html.j2").is_file() else BUILTIN_TEMPLATES


class PageRenderer:
    """Renders the pages; templates are compiled once, at startup."""

    def __init__(self, directory: Path, *, organisation: str) -> None:
        # The organiser's pages first; any page they lack (one added in a later version,
        # say) comes from the built-in set, drawn inside their own base.html.j2.
        self.environment = Environment(
            loader=ChoiceLoader([FileSystemLoader(directory), FileSystemLoader(BUILTIN_TEMPLATES)]),
            autoescape=True,
            undefined=StrictUndefined,
            auto_reload=False,
            bytecode_cache=COMPILED,
        )
        self.organisation = organisation
        self.stylesheet = (directory / STYLESHEET).read_bytes()
        for name in self.environment.list_templates(extensions=["j2"]):
            if name.startswith(ADMIN_FOLDER):
                continue  # the dashboard's own environment (web/admin) compiles those
            self.environment.get_template(name)  # fail at startup, not at first visit

    def page(
        self,
        template: str,
        *,
        status_code: int = 200,
        root_path: str = "",
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> Response:
        html = self.environment.get_template(template).render(
            organisation=self.organisation, root_path=root_path, **context
        )
        return HTMLResponse(html, status_code=status_code, headers=headers)

    def message(
        self,
        *,
        status_code: int,
        title: str,
        text: str,
        root_path: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """A page with a heading and one sentence: errors and refusals."""
        return self.page(
            "message.html.j2",
            status_code=status_code,
            root_path=root_path,
            headers=headers,
            title=title,
            text=text,
        )

    def invalid_link(self, *, root_path: str = "") -> Response:
        """The one answer for a bad, forged, or orphaned token: 404, nothing revealed."""
        return self.message(
            status_code=404,
            title="This link is not valid",
            text="Check that you copied the whole link from the email. If it still does "
            "not work, reply to the email and ask to be removed from the list.",
            root_path=root_path,
        )
