"""What the organiser confirms before a send: what a recipient will see, and through what.

The same lines serve `mailer send`, `mailer schedule`, `campaign send-now` and (later) the
web dashboard, so every confirmation shows the same facts.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailer.config import Settings
from mailer.message.event import Event


@dataclass(frozen=True, slots=True)
class SendSummary:
    from_line: str
    reply_to: str
    subject: str
    unsubscribe_base: str
    list_name: str
    audience: int
    relay: str

    def lines(self) -> list[str]:
        return [
            f"  From:         {self.from_line}",
            f"  Reply-To:     {self.reply_to}",
            f"  Subject:      {self.subject}",
            f"  Unsubscribe:  {self.unsubscribe_base}/u/...",
            f"  To:           {self.audience} subscriber(s) of list '{self.list_name}'",
            f"  Relay:        {self.relay}",
        ]


def summarise_send(
    settings: Settings, event: Event, *, list_name: str, audience: int
) -> SendSummary:
    """What a recipient will see (sender, reply address, subject, unsubscribe link) and
    where it goes (the list and its count, the relay)."""
    name = settings.from_name
    from_line = f"{name} <{settings.from_address}>" if name else settings.from_address
    user = f"{settings.smtp_username}@" if settings.smtp_username else ""
    relay = f"{user}{settings.smtp_host}:{settings.smtp_port} ({settings.smtp_security.value})"
    if settings.relays:  # MAILER_RELAYS: each with its share
        total = sum(r.weight for r in settings.relays)
        relay = "; ".join(
            f"{r.name} ({r.security.value}, {r.weight / total:.0%})" for r in settings.relays
        )
    return SendSummary(
        from_line=from_line,
        reply_to=settings.reply_to or event.organiser.email,
        subject=event.subject,
        unsubscribe_base=settings.base_url.rstrip("/"),
        list_name=list_name,
        audience=audience,
        relay=relay,
    )
