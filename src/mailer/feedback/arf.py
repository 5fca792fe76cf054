"""RFC 5965 abuse reports (ARF): a reader pressed "this is spam" and a feedback loop
(RFC 6449) told us.

    Content-Type: multipart/report; report-type=feedback-report
      text/plain                 a note for people
      message/feedback-report    Feedback-Type: abuse, Original-Rcpt-To: ..., ...
      message/rfc822             the message complained about (or text/rfc822-headers)

Many feedback loops redact the reader's address (RFC 6449 section 3.2), so the report is
also tied to us by what the returned message carries: its Message-ID, the token of its
`List-Unsubscribe` link, and its envelope sender when that was a VERP address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from mailer.feedback.mime import (
    addresses,
    field_blocks,
    header_text,
    header_values,
    message_id,
    returned_headers,
    walk,
)

# Reports of a reader's complaint. `auth-failure` (RFC 6591), `not-spam` (RFC 6430) and
# `virus` say nothing about whether the reader wants our mail.
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "other"})

_UNSUBSCRIBE_LINK = re.compile(r"<https?://[^>\s]*/u/([A-Za-z0-9_-]{16,64})/?>")


@dataclass(frozen=True, slots=True)
class AbuseReport:
    feedback_type: str
    is_complaint: bool
    recipients: tuple[str, ...]
    message_id: str | None
    unsubscribe_token: str | None
    """From the returned message's List-Unsubscribe https link (`.../u/TOKEN`)."""
    envelope_senders: tuple[str, ...]
    """Original-Mail-From and the returned Return-Path: our VERP address, if it was one."""


def read_arf(message: Message, report_part: Message | None = None) -> AbuseReport | None:
    """The report, or None when `message` holds no message/feedback-report part.
    `report_part`: that part, when the caller has already walked the tree for it."""
    if report_part is None:
        report_part = next(
            (p for p in walk(message) if p.get_content_type() == "message/feedback-report"),
            None,
        )
    if report_part is None:
        return None
    blocks = field_blocks(report_part)
    if not blocks:
        return None
    fields = blocks[0]
    feedback_type = " ".join(header_text(fields, "Feedback-Type").split()).lower()[:64] or "abuse"
    returned = returned_headers(message)
    recipients = addresses(header_values(fields, "Original-Rcpt-To"))
    if not recipients and returned is not None:
        recipients = addresses(header_values(returned, "To"))
    senders = addresses(header_values(fields, "Original-Mail-From"))
    token = None
    returned_id = None
    if returned is not None:
        senders += addresses(header_values(returned, "Return-Path"))
        returned_id = message_id(header_text(returned, "Message-ID"))
        link = _UNSUBSCRIBE_LINK.search(" ".join(header_values(returned, "List-Unsubscribe")))
        token = link.group(1) if link else None
    return AbuseReport(
        feedback_type=feedback_type,
        is_complaint=feedback_type in COMPLAINT_TYPES,
        recipients=tuple(dict.fromkeys(recipients)),
        message_id=returned_id,
        unsubscribe_token=token,
        envelope_senders=tuple(dict.fromkeys(senders)),
    )
