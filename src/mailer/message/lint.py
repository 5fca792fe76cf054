"""Checks of an event file beyond its front matter: the templates it uses, parsed and tried.

Separate from the parser because it needs the renderer, which needs the parsed Event.
"""

from __future__ import annotations

from pathlib import Path

from mailer.errors import InputError, TemplateError
from mailer.message.event import Event, parse_event
from mailer.message.layouts import find_layout
from mailer.message.render import Blank, Renderer, read_template
from mailer.message.templating import front_matter_line, make_environment, parse_checked
from mailer.models import Recipient


def validate_event(path: Path, *, templates_dir: Path) -> list[InputError]:
    """Every problem in the event file and the templates it uses, each with its file and line."""
    event, errors = parse_event(path)
    if event is None or errors:
        return errors
    return _check_templates(event, templates_dir=templates_dir)


def _check_templates(event: Event, *, templates_dir: Path) -> list[InputError]:
    """Static checks of the subject, body and layouts, then a trial render if they pass."""
    html_env = make_environment(html=True)
    problems: list[InputError] = []
    subject_line = front_matter_line(event.path, "subject")
    problems += parse_checked(
        html_env, event.subject, path=event.path, first_line=subject_line, extra=frozenset()
    )
    problems += parse_checked(
        html_env, event.description, path=event.path, first_line=event.body_line, extra=frozenset()
    )
    try:
        layout = find_layout(event.layout, event_path=event.path, templates_dir=templates_dir)
    except TemplateError as exc:
        line = front_matter_line(event.path, "layout")
        return [
            *problems,
            TemplateError(str(exc.message), path=event.path, line=line, hint=exc.hint),
        ]
    for path in (layout.html, layout.text):
        problems += parse_checked(
            html_env, read_template(path), path=path, first_line=1, extra=frozenset({"content"})
        )
    if problems:
        return problems
    try:
        renderer = Renderer(
            event,
            templates_dir=templates_dir,
            list_name="List",
            calendar_url="https://example.org/",
        )
        sample = Recipient(0, "sample@example.org", "Sample Subscriber", Blank())
        renderer.render(sample, unsubscribe_url="https://example.org/u/sample")
    except TemplateError as exc:
        return [exc]
    return []
