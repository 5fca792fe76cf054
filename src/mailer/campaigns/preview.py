"""Looking at an invitation before sending it: the event files, their checks, and what one
subscriber of a list would receive. Shared by `mailer validate` / `mailer preview` and the
dashboard's Events pages, so both check and show the same thing."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mailer.config import Settings
from mailer.errors import NotFoundError
from mailer.message.compose import InvitationBuilder
from mailer.message.event import Event
from mailer.message.lint import LintReport, ListColumns, lint_event
from mailer.models import Recipient
from mailer.store import Store

PREVIEW_TOKEN = "preview-token"  # noqa: S105 - a stand-in shown in previews, not a secret
EVENT_SUFFIX = ".md"


def event_files(templates_dir: Path) -> list[Path]:
    """The event files under `templates_dir/events`, by name (not in subfolders)."""
    folder = templates_dir / "events"
    if not folder.is_dir():
        return []
    return sorted(
        path for path in folder.iterdir() if path.suffix == EVENT_SUFFIX and path.is_file()
    )


def list_columns(store: Store, list_name: str) -> ListColumns:
    """How many subscribed members of the list have each attribute, and have it filled."""
    present: Counter[str] = Counter()
    filled: Counter[str] = Counter()
    total = 0
    for member in store.iter_subscribers(list_name, only_subscribed=True):
        total += 1
        present.update(member.attributes.keys())
        filled.update(key for key, value in member.attributes.items() if value.strip())
    return ListColumns(list_name, total, dict(present), dict(filled))


def check_event(
    store: Store, settings: Settings, path: Path, *, list_name: str | None, now: datetime
) -> LintReport:
    """`mailer validate EVENT [--list NAME]`: every problem with its file and line."""
    columns = list_columns(store, list_name) if list_name is not None else None
    return lint_event(path, templates_dir=settings.templates_dir, columns=columns, now=now)


def member_recipient(store: Store, list_name: str, email: str | None) -> Recipient:
    """The list's first mailable member, or the one with this address (normalised as
    the import does); NotFoundError if the list has none, or they are not on it."""
    if email is None:
        first = next(iter(store.iter_subscribers(list_name, only_subscribed=True)), None)
        if first is None or first.id is None:
            raise NotFoundError(f"list {list_name!r} has no subscribed members to preview for")
        found = first
    else:
        list_id = store.list_id(list_name)
        found = store.get_subscriber(email)  # NotFoundError names the address
        if found.id is None or not store.is_mailable(found.id, list_id):
            raise NotFoundError(
                f"{found.email} is not a subscribed member of list {list_name!r}",
                hint="Pick another subscriber, or none for the list's first member.",
            )
    assert found.id is not None
    return Recipient(found.id, found.email, found.name, found.attributes)


@dataclass(frozen=True, slots=True)
class Preview:
    """What one recipient would receive, part by part."""

    subject: str
    html: str
    text: str
    ics: bytes
    eml: bytes


def render_preview(
    settings: Settings, event: Event, recipient: Recipient, *, list_name: str | None
) -> Preview:
    """The message as `mailer preview` writes it: links carry a stand-in token, so a
    click on the preview's unsubscribe link unsubscribes nobody."""
    sender = settings.sender_identity
    builder = InvitationBuilder(
        event,
        sender=sender,
        campaign_id=0,
        list_name=list_name or "Preview",
        templates_dir=settings.templates_dir,
    )
    url = f"{sender.base_url}/u/{PREVIEW_TOKEN}"
    rsvp = f"{sender.base_url}/r/{PREVIEW_TOKEN}" if event.rsvp_enabled else None
    rendered = builder.render(recipient, unsubscribe_url=url, rsvp_url=rsvp)
    message = builder.build(recipient, unsubscribe_url=url, rsvp_url=rsvp)
    return Preview(rendered.subject, rendered.html, rendered.text, builder.ics, message.data)
