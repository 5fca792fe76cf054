"""What the organiser confirms before a send: what a recipient will see, and through what.

The same lines serve `mailer send`, `mailer schedule`, `campaign send-now` and (later) the
web dashboard, so every confirmation shows the same facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailer.config import RelaySettings, Settings
from mailer.errors import MailerError
from mailer.message.event import Event

if TYPE_CHECKING:
    from mailer.store import Store


@dataclass(frozen=True, slots=True)
class SendSummary:
    from_line: str
    reply_to: str
    subject: str
    unsubscribe_base: str
    list_name: str
    audience: int
    relay: str
    subject_for: str | None = None
    """A personalised subject is shown as this member of the list gets it (the template
    itself, `{{ subscriber.first_name }}` and all, is not what anyone sees)."""

    def lines(self) -> list[str]:
        example = f"  (as {self.subject_for} gets it)" if self.subject_for else ""
        return [
            f"  From:         {self.from_line}",
            f"  Reply-To:     {self.reply_to}",
            f"  Subject:      {self.subject}{example}",
            f"  Unsubscribe:  {self.unsubscribe_base}/u/...",
            f"  To:           {self.audience} subscriber(s) of list '{self.list_name}'",
            f"  Relay:        {self.relay}",
        ]


def summarise_send(
    settings: Settings,
    event: Event,
    *,
    list_name: str,
    audience: int,
    store: Store | None = None,
) -> SendSummary:
    """What a recipient will see (sender, reply address, subject, unsubscribe link) and
    where it goes (the list and its count, the relay). With `store`, a personalised
    subject is rendered for the list's first member."""
    subject, subject_for = event.subject, None
    if store is not None and "{" in event.subject:
        from mailer.campaigns.preview import member_recipient, render_preview

        try:
            member = member_recipient(store, list_name, None)
            subject = render_preview(settings, event, member, list_name=list_name).subject
            subject_for = member.email
        except MailerError:
            pass  # nobody on the list yet, or the template fails: its checks say so
    name = settings.from_name
    from_line = f"{name} <{settings.from_address}>" if name else settings.from_address
    user = f"{settings.smtp_username}@" if settings.smtp_username else ""
    relay = f"{user}{settings.smtp_host}:{settings.smtp_port} ({settings.smtp_security.value})"
    if settings.relays:  # MAILER_RELAYS: each with its share
        total = sum(r.weight for r in settings.relays)
        relay = "; ".join(
            f"{r.name} ({_address(r)}{r.security.value}, {r.weight / total:.0%})"
            for r in settings.relays
        )
    return SendSummary(
        from_line=from_line,
        reply_to=settings.reply_to or event.organiser.email,
        subject=subject,
        subject_for=subject_for,
        unsubscribe_base=settings.base_url.rstrip("/"),
        list_name=list_name,
        audience=audience,
        relay=relay,
    )


def _address(relay: RelaySettings) -> str:
    """Where a named relay is, for the confirmation (its name alone says nothing of it);
    nothing when the name is already HOST:PORT."""
    address = f"{relay.host}:{relay.port}"
    return "" if relay.name == address else f"{address}, "
