"""The short message a guest gets on moving up from the waiting list (issue 14).

Plain text only, one per promotion (never the hot path), so it is assembled with the
same header helpers as invitations: every value checked before it reaches a header, CRLF,
quoted-printable body. It answers the guest's own earlier request, so it carries
`Auto-Submitted: auto-generated` (RFC 3834: no auto-replies to it) and no List-Unsubscribe:
it is not list mail, and goes even to a guest who has left the list since answering.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

from mailer.message.compose import QuotedPrintable, ascii_address, new_message_id
from mailer.message.dates import format_when
from mailer.message.event import Event
from mailer.message.headers import mailbox, unstructured
from mailer.models import OutgoingMessage, SenderIdentity
from mailer.safety import ensure_header_safe


def promotion_text(event: Event, *, name: str, guests: int, rsvp_url: str, ics_url: str) -> str:
    greeting = f"Dear {name.split()[0]}," if name.split() else "Hello,"
    party = "a place" if guests == 0 else f"places for you and {guests} guest(s)"
    return "\n".join(
        [
            greeting,
            "",
            f"A place has come free: you now have {party} at {event.title}.",
            "",
            f"When:  {format_when(event.starts_at)}",
            f"Where: {event.place or event.online_url or 'online'}",
            "",
            "Add it to your calendar:",
            ics_url,
            "",
            "If you cannot come after all, please change your answer, so that the next",
            "person waiting can have the place:",
            rsvp_url,
            "",
            f"-- {event.organiser.name}, {event.organiser.email}",
            "",
        ]
    )


def build_promotion_notice(
    event: Event,
    *,
    sender: SenderIdentity,
    name: str,
    email: str,
    guests: int,
    rsvp_url: str,
    ics_url: str,
    now: datetime | None = None,
) -> OutgoingMessage:
    """The complete message (bytes on the wire) telling `email` they moved up."""
    from_address = ascii_address(sender.from_address, field="from_address")
    to_address = ascii_address(email, field="email")
    ensure_header_safe(name, field="name")
    reply_to = ascii_address(sender.reply_to or event.organiser.email, field="reply_to")
    message_id = new_message_id(from_address.rpartition("@")[2])
    body = promotion_text(event, name=name, guests=guests, rsvp_url=rsvp_url, ics_url=ics_url)
    # The invitations' encoder: CRLF soft breaks too (b2a_qp alone writes bare LF ones),
    # and no line starting with "From " or "." (a long link's soft break can put one there).
    encoded = QuotedPrintable(limit=0).encode(body)
    head = "\r\n".join(
        [
            f"Date: {format_datetime((now or datetime.now(UTC)).replace(microsecond=0))}",
            f"From: {mailbox(sender.from_name, from_address, field='From')}",
            f"To: {mailbox(name, to_address, field='To')}",
            f"Reply-To: {reply_to}",
            f"Subject: {unstructured(f'You have a place: {event.title}')}",
            f"Message-ID: {message_id}",
            "Auto-Submitted: auto-generated",
            "MIME-Version: 1.0",
            'Content-Type: text/plain; charset="utf-8"',
            "Content-Transfer-Encoding: quoted-printable",
            "",
            "",
        ]
    )
    return OutgoingMessage(
        sender=from_address,
        recipient=to_address,
        message_id=message_id,
        data=head.encode("ascii") + encoded + b"\r\n",
    )
